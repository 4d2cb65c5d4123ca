"""Per-connector error mapping: retryable vs fail-fast kinds, Retry-After, client-safe messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors import registry
from connectors.base import Connector, ConnectorError, ErrorKind
from connectors.http import HttpConnector, kind_for_status, parse_retry_after
from connectors.salesforce import SalesforceConnector
from connectors.simulators.salesforce import SalesforceSimulator
from connectors.simulators.sap import SapSimulator
from connectors.simulators.serve import RunningSimulator, start

CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "servicenow": ({"instance_url": "https://sn.example.com"}, {"username": "u", "password": "pw-secret"}),
    "sap": ({"base_url": "https://s4.example.com"}, {"username": "u", "password": "pw-secret"}),
    "m365": (
        {"tenant_id": "contoso", "drive_id": "b!d"},
        {"client_id": "app", "client_secret": "pw-secret"},
    ),
}


def mocked(type_: str, handler: Callable[[httpx.Request], httpx.Response]) -> Connector:
    config, creds = CONFIGS[type_]
    return registry.build(
        type_, config, creds, http=httpx.AsyncClient(transport=httpx.MockTransport(handler))
    )


def answer(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> Callable[..., httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/v2.0/token"):
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 3599})
        return httpx.Response(status, json=body if body is not None else {}, headers=headers)

    return handler


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, ErrorKind.validation, False),
        (401, ErrorKind.auth, False),
        (403, ErrorKind.permission, False),
        (404, ErrorKind.not_found, False),
        (409, ErrorKind.conflict, False),
        (429, ErrorKind.throttled, True),
        (500, ErrorKind.unavailable, True),
        (503, ErrorKind.unavailable, True),
        (504, ErrorKind.timeout, True),
    ],
)
@pytest.mark.parametrize("type_", sorted(CONFIGS))
async def test_http_status_mapping(type_: str, status: int, kind: ErrorKind, retryable: bool) -> None:
    conn = mocked(
        type_, answer(status, {"error": {"code": "X", "message": "vendor says no"}}, {"Retry-After": "7"})
    )
    with pytest.raises(ConnectorError) as info:
        await conn.test()
    assert info.value.kind is kind
    assert info.value.retryable is retryable
    assert info.value.status == status
    assert "pw-secret" not in str(info.value)
    if status == 429:
        assert info.value.retry_after == 7.0


@pytest.mark.parametrize("type_", sorted(CONFIGS))
async def test_transport_failures_are_retryable(type_: str) -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    for handler, kind in ((timeout, ErrorKind.timeout), (refused, ErrorKind.unavailable)):
        with pytest.raises(ConnectorError) as info:
            await mocked(type_, handler).test()
        assert info.value.kind is kind
        assert info.value.retryable


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert kind_for_status(418) is ErrorKind.validation


async def test_servicenow_vendor_message_is_used_and_url_query_is_not() -> None:
    body = {"error": {"message": "Invalid table bogus", "detail": ""}, "status": "failure"}
    conn = mocked("servicenow", answer(400, body))
    with pytest.raises(ConnectorError) as info:
        await conn.run_action("query", {"table": "bogus", "query": "caller_id=secret-caller"}, "k")
    assert "Invalid table bogus" in str(info.value)
    assert "secret-caller" not in str(info.value)
    assert isinstance(conn, HttpConnector)


async def test_unknown_action_and_invalid_input_are_validation_errors() -> None:
    conn = mocked("servicenow", answer(200, {"result": []}))
    with pytest.raises(ConnectorError) as info:
        await conn.run_action("drop_table", {}, "k")
    assert info.value.kind is ErrorKind.validation
    with pytest.raises(ConnectorError) as info:
        await conn.run_action("update_record", {"table": "../etc", "sys_id": "x", "fields": {"a": "b"}}, "k")
    assert info.value.kind is ErrorKind.validation
    assert "table" in str(info.value)


async def test_m365_token_is_cached_and_auth_failure_is_clear() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 3599})
        return httpx.Response(200, json={"value": []})

    conn = mocked("m365", handler)
    await conn.test()
    await conn.test()
    assert sum(p.endswith("/token") for p in calls) == 1

    def bad(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401, json={"error": "invalid_client", "error_description": "AADSTS7000215: Invalid."}
        )

    with pytest.raises(ConnectorError) as info:
        await mocked("m365", bad).test()
    assert info.value.kind is ErrorKind.auth
    assert "AADSTS7000215" in str(info.value)


async def test_m365_download_redirect_only_to_allowed_hosts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 3599})
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data"})

    with pytest.raises(ConnectorError) as info:
        await mocked("m365", handler).run_action("download_file", {"drive_id": "d", "item_id": "i"}, "k")
    assert info.value.kind is ErrorKind.config


async def test_sap_rfc_without_pyrfc_says_how_to_enable_it() -> None:
    conn = mocked("sap", answer(200, {"d": {"results": []}}))
    with pytest.raises(ConnectorError) as info:
        await conn.run_action("rfc_call", {"function": "BAPI_USER_GET_DETAIL"}, "k")
    assert info.value.kind is ErrorKind.not_installed
    assert "pyrfc" in str(info.value)
    assert not info.value.retryable
    await conn.test()  # the rest of the connector works without pyrfc


@pytest.fixture(scope="module")
def sap_sim() -> Iterator[tuple[SapSimulator, RunningSimulator]]:
    sim = SapSimulator(records=5)
    with start(sim) as served:
        yield sim, served


async def test_sap_writes_do_the_csrf_handshake_and_expired_tokens_are_retryable(
    sap_sim: tuple[SapSimulator, RunningSimulator],
) -> None:
    sim, served = sap_sim
    conn = registry.build(
        "sap", {"base_url": served.base_url}, {"username": "COMM_USER", "password": "sap-secret"}
    )
    out = await conn.run_action("create_business_partner", {"full_name": "ACME"}, "bp-1")
    assert out["created"] is True
    sim.csrf.clear()  # the server forgets the token (session timeout)
    with pytest.raises(ConnectorError) as info:
        await conn.run_action("block_business_partner", {"business_partner": out["business_partner"]}, "b-1")
    assert info.value.retryable
    assert "CSRF" in str(info.value)
    await conn.run_action("block_business_partner", {"business_partner": out["business_partner"]}, "b-1")
    assert sim.entities["A_BusinessPartner"][out["business_partner"]]["BusinessPartnerIsBlocked"] is True
    again = await conn.run_action("create_business_partner", {"full_name": "ACME"}, "bp-1")
    assert again == {"business_partner": out["business_partner"], "created": False}
    await conn.close()


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (
            SalesforceExpiredSession("u", 401, "r", [{"errorCode": "INVALID_SESSION_ID", "message": "x"}]),
            ErrorKind.auth,
        ),
        (
            SalesforceRefusedRequest("u", 403, "r", [{"errorCode": "INSUFFICIENT_ACCESS", "message": "x"}]),
            ErrorKind.permission,
        ),
        (
            SalesforceRefusedRequest(
                "u", 403, "r", [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "x"}]
            ),
            ErrorKind.throttled,
        ),
        (
            SalesforceResourceNotFound("u", 404, "r", [{"errorCode": "NOT_FOUND", "message": "x"}]),
            ErrorKind.not_found,
        ),
        (
            SalesforceMalformedRequest("u", 400, "r", [{"errorCode": "INVALID_FIELD", "message": "x"}]),
            ErrorKind.validation,
        ),
        (
            SalesforceMalformedRequest("u", 400, "r", [{"errorCode": "DUPLICATE_VALUE", "message": "x"}]),
            ErrorKind.conflict,
        ),
        (SalesforceMoreThanOneRecord("u", 300, "r", ["a", "b"]), ErrorKind.conflict),
        (SalesforceGeneralError("u", 429, "r", [{"errorCode": "X", "message": "x"}]), ErrorKind.throttled),
        (SalesforceGeneralError("u", 503, "r", "<html>down</html>"), ErrorKind.unavailable),
        (
            SalesforceGeneralError("u", 500, "r", [{"errorCode": "UNKNOWN_EXCEPTION", "message": "x"}]),
            ErrorKind.unavailable,
        ),
    ],
)
def test_salesforce_exception_mapping(exc: Exception, kind: ErrorKind) -> None:
    conn = registry.build(
        "salesforce", {"instance_url": "https://x.my.salesforce.com"}, {"access_token": "tok-secret"}
    )
    assert isinstance(conn, SalesforceConnector)

    def boom() -> None:
        raise exc

    with pytest.raises(ConnectorError) as info:
        conn._guard("call", boom)
    assert info.value.kind is kind
    assert "https://" not in str(info.value)  # simple-salesforce's messages embed the URL; ours do not


def test_salesforce_invalid_access_token_and_tls() -> None:
    sim = SalesforceSimulator(records=3)
    with start(sim, tls=True) as served:
        conn = registry.build(
            "salesforce",
            {"instance_url": served.base_url},
            {"access_token": "00Dwrong-token"},
            verify=served.verify,
        )
        with pytest.raises(ConnectorError) as info:
            conn.test()
        assert info.value.kind is ErrorKind.auth
        assert "INVALID_SESSION_ID" in str(info.value)
        assert "00Dwrong" not in str(info.value)
        # without the simulator's CA the TLS handshake fails: config error, not retryable
        untrusted = registry.build(
            "salesforce",
            {"login_url": served.base_url},
            {"client_id": "nexus-client", "client_secret": "sf-secret"},
        )
        with pytest.raises(ConnectorError) as info:
            untrusted.test()
        assert info.value.kind is ErrorKind.config
        conn.close()
        untrusted.close()


def test_salesforce_is_blocking_and_runs_on_threads() -> None:
    sim = SalesforceSimulator(records=3)
    with start(sim, tls=True) as served:
        conn = registry.build(
            "salesforce",
            {"login_url": served.base_url},
            {
                "client_id": "nexus-client",
                "client_secret": "sf-secret",
                "username": sim.username,
                "password": sim.password,
                "security_token": sim.security_token,
            },
            verify=served.verify,
        )
        assert conn.blocking

        async def run() -> Any:
            return await asyncio.to_thread(
                conn.run_action, "query", {"soql": "SELECT Id, Subject FROM Case"}, "k"
            )

        out = asyncio.run(run())
        assert out["total_size"] == 3
        assert out["done"] is True
        conn.close()
