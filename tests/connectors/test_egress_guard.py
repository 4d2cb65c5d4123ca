"""Connectors built for a tenant's connection connect only to vetted addresses.

The create/test-time host check is not enough on its own: a vendor host name can re-resolve
to a private address later (DNS rebinding). With an egress allowlist the connector's own HTTP
connections are vetted, so a simulator on 127.0.0.1 — standing in for an internal service —
is unreachable unless the operator allowlisted it.
"""

from __future__ import annotations

import asyncio

import pytest

from connectors import registry
from connectors.base import Connector, ConnectorError, ErrorKind
from connectors.simulators.serve import TLS_TYPES, connection_example, make_simulator, start


async def _test_and_close(connector: Connector) -> None:
    try:
        if connector.blocking:
            await asyncio.to_thread(connector.test)
        else:
            await connector.test()
    finally:
        if connector.blocking:
            await asyncio.to_thread(connector.close)
        else:
            await connector.close()


@pytest.mark.parametrize("connector_type", ["servicenow", "sap", "m365", "salesforce"])
async def test_private_address_is_refused_at_connect_time(connector_type: str) -> None:
    with start(make_simulator(connector_type, records=3), tls=connector_type in TLS_TYPES) as served:
        example = connection_example(connector_type, served)
        refused = registry.build(
            connector_type,
            example["config"],
            example["credentials"],
            verify=served.verify,
            egress_allowlist=[],
        )
        with pytest.raises(ConnectorError) as caught:
            await _test_and_close(refused)
        assert caught.value.kind is ErrorKind.config
        assert "refused" in caught.value.message
        assert "secret" not in caught.value.message

        allowed = registry.build(
            connector_type,
            example["config"],
            example["credentials"],
            verify=served.verify,
            egress_allowlist=["127.0.0.1"],
        )
        await _test_and_close(allowed)  # the operator's allowlist lets the same call through
