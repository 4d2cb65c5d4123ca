"""HTTP connectors trust an operator CA bundle through an ``ssl.SSLContext`` (httpx deprecated
passing a bundle path as ``verify``), and still refuse a server that bundle does not sign."""

from __future__ import annotations

import ssl
import warnings

import pytest

from connectors import registry
from connectors.base import ConnectorError, ErrorKind
from connectors.http import tls_context
from connectors.simulators.serve import start
from connectors.simulators.servicenow import ServiceNowSimulator


def test_a_bundle_path_becomes_an_ssl_context() -> None:
    assert tls_context(True) is True
    assert tls_context(False) is False
    with start(ServiceNowSimulator(records=1), tls=True) as sim:
        assert sim.ca_path
        context = tls_context(sim.ca_path)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED


async def test_tls_connector_with_a_ca_bundle_warns_nothing_and_verifies() -> None:
    with start(ServiceNowSimulator(records=1), tls=True) as sim:
        config = {"instance_url": sim.base_url}
        credentials = {"username": "integration", "password": "sn-secret"}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # httpx's DeprecationWarning for a path would raise here
            trusted = registry.build("servicenow", config, credentials, verify=sim.ca_path or "")
            try:
                await trusted.test()
            finally:
                await trusted.close()
        untrusted = registry.build("servicenow", config, credentials)  # the system store only
        try:
            with pytest.raises(ConnectorError) as refused:
                await untrusted.test()
        finally:
            await untrusted.close()
    assert refused.value.kind is ErrorKind.unavailable
