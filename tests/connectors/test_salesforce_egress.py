"""Salesforce connections are vetted on every connection, not only when created (DNS rebinding).

The attacker's name ``sf.rebind.example`` answers a public address to the create-time host
check and 127.0.0.1 afterwards. The Salesforce simulator on 127.0.0.1 stands in for an internal
service; it serves TLS with a certificate valid for that name, as an attacker's own server
would. Only the system resolver is faked (``socket.getaddrinfo``, for the test's names only):
the connector, the guard, requests/urllib3 and the TLS server are real.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors import registry
from connectors.base import ConnectorError, ErrorKind
from connectors.salesforce import SalesforceConfig, SalesforceConnector
from connectors.simulators.salesforce import SalesforceSimulator
from connectors.simulators.serve import RunningSimulator, start

NAME = "sf.rebind.example"
OTHER = "not-in-the-cert.example"  # resolves to the simulator, but its certificate does not name it
PUBLIC = "93.184.215.14"
CREDENTIALS = {"client_id": "nexus-client", "client_secret": "sf-secret"}


class FakeDns:
    """``socket.getaddrinfo`` for the test names: ``public_answers`` public answers, then loopback."""

    def __init__(self, real: Callable[..., Any], public_answers: int) -> None:
        self.real = real
        self.public_left = public_answers
        self.lookups: list[str] = []

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (NAME, OTHER):
            return self.real(host, port, *args, **kwargs)
        self.lookups.append(host)
        address = "127.0.0.1"
        if self.public_left > 0:
            self.public_left -= 1
            address = PUBLIC
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], FakeDns]:
    def install(public_answers: int) -> FakeDns:
        fake = FakeDns(socket.getaddrinfo, public_answers)
        monkeypatch.setattr(socket, "getaddrinfo", fake)
        return fake

    return install


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    with start(SalesforceSimulator(records=3), tls=True, tls_names=(NAME,)) as served:
        yield served


def _url(served: RunningSimulator, host: str = NAME) -> str:
    return served.base_url.replace("127.0.0.1", host)


async def _checked_then_built(
    config: dict[str, Any], credentials: dict[str, Any], served: RunningSimulator, allowlist: list[str]
) -> SalesforceConnector:
    """The create-time check (as the API runs it), then the connector a worker builds."""
    await registry.check_hosts(
        SalesforceConnector,
        SalesforceConfig.model_validate(config),
        allow_private=False,
        allowed_hosts=allowlist,
    )
    connector = registry.build(
        "salesforce", config, credentials, verify=served.verify, egress_allowlist=allowlist
    )
    assert isinstance(connector, SalesforceConnector)
    return connector


async def test_login_host_rebinding_to_loopback_is_refused_at_connect(
    sim: RunningSimulator, dns: Callable[[int], FakeDns]
) -> None:
    fake = dns(1)  # the create-time check sees the public answer; every later lookup is loopback
    connector = await _checked_then_built({"login_url": _url(sim)}, CREDENTIALS, sim, [])
    try:
        with pytest.raises(ConnectorError) as caught:
            connector.test()
    finally:
        connector.close()
    assert caught.value.kind is ErrorKind.config
    assert "Salesforce login refused" in caught.value.message
    assert "sf-secret" not in caught.value.message
    simulator: SalesforceSimulator = sim.app
    assert simulator.tokens == set()  # the token request never reached the internal server
    assert fake.lookups == [NAME, NAME]


async def test_instance_host_rebinding_to_loopback_is_refused_at_connect(
    sim: RunningSimulator, dns: Callable[[int], FakeDns]
) -> None:
    simulator: SalesforceSimulator = sim.app
    simulator.tokens.add("00Dstolen")
    config = {"instance_url": _url(sim), "login_url": _url(sim)}
    dns(2)  # public for both hosts at check time, loopback when the API call connects
    connector = await _checked_then_built(config, {"access_token": "00Dstolen"}, sim, [])
    try:
        with pytest.raises(ConnectorError) as caught:
            connector.test()
    finally:
        connector.close()
    assert caught.value.kind is ErrorKind.config
    assert "refused" in caught.value.message
    assert "00Dstolen" not in caught.value.message


async def test_allowlisted_address_is_reached_by_name_with_tls_verified(
    sim: RunningSimulator, dns: Callable[[int], FakeDns]
) -> None:
    """The guard connects to the vetted address but TLS still checks the certificate by name."""
    fake = dns(0)  # always 127.0.0.1, which the operator allowlisted
    connector = await _checked_then_built({"login_url": _url(sim)}, CREDENTIALS, sim, ["127.0.0.1"])
    try:
        connector.test()
        out = connector.run_action("create_case", {"subject": "guarded"}, "key-1")
    finally:
        connector.close()
    simulator: SalesforceSimulator = sim.app
    assert simulator.count("Case", Nexus_Idempotency_Key__c="key-1") == 1
    assert out["created"] is True
    assert set(fake.lookups) == {NAME}

    wrong_name = await _checked_then_built({"login_url": _url(sim, OTHER)}, CREDENTIALS, sim, ["127.0.0.1"])
    try:
        with pytest.raises(ConnectorError) as caught:
            wrong_name.test()
    finally:
        wrong_name.close()
    assert caught.value.kind is ErrorKind.config
    assert "TLS verification failed" in caught.value.message


def test_without_an_egress_allowlist_the_session_is_not_guarded(sim: RunningSimulator) -> None:
    """``NEXUS_CONNECTORS__ALLOW_PRIVATE_HOSTS=true`` (no allowlist given): loopback is reachable."""
    connector = registry.build("salesforce", {"login_url": sim.base_url}, CREDENTIALS, verify=sim.verify)
    try:
        connector.test()
    finally:
        connector.close()


@pytest.mark.parametrize("field", ["login_url", "instance_url"])
def test_salesforce_urls_must_be_https(field: str) -> None:
    """The token request carries the client secret and password; calls carry the token."""
    from pydantic import ValidationError

    from connectors.salesforce import SalesforceConfig

    with pytest.raises(ValidationError, match="https"):
        SalesforceConfig.model_validate({field: "http://login.example.com"})
    assert SalesforceConfig.model_validate({field: "https://login.example.com"})
