"""``/v1/connectors`` and ``/v1/connections``: CRUD, the test endpoint against the real vendor
simulators, write-only credentials, the outbound host guard and tenant isolation."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from connectors.simulators.serve import RunningSimulator
from connectors.store import ConnectionRepository, CredentialCipher
from core.config import Settings
from core.db.connector_models import Connection
from core.db.models import AuditEvent
from core.errors import Unavailable
from tests import connector_support as support
from tests.conftest import auth
from tests.connector_support import (
    SF_SECRET,
    SN_PASSWORD,
    MakeKey,
    create_connection,
    salesforce_body,
    servicenow_body,
)

servicenow_sim = support.servicenow_sim
salesforce_sim = support.salesforce_sim
conn_settings = support.conn_settings
conn_api = support.conn_api


async def test_connectors_are_described(
    conn_api: httpx.AsyncClient, make_key: MakeKey, tenant_id: str
) -> None:
    key = await make_key(tenant_id, role="viewer")
    response = await conn_api.get("/v1/connectors", headers=auth(key))
    assert response.status_code == 200
    types = {c["type"]: c for c in response.json()["data"]}
    assert "servicenow" in types
    create = next(a for a in types["servicenow"]["actions"] if a["name"] == "create_incident")
    assert create["compensation"] == "cancel_incident"
    assert {"name": "password", "secret": True} in types["servicenow"]["credential_fields"]


async def test_crud_and_credentials_are_write_only(
    conn_api: httpx.AsyncClient,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
    conn_settings: Settings,
) -> None:
    key = await make_key(tenant_id)
    created = await create_connection(conn_api, key, servicenow_body(servicenow_sim))
    assert created["type"] == "servicenow"
    assert created["credential_fields"] == ["username", "password", "access_token"]
    assert SN_PASSWORD not in str(created)
    assert "credentials" not in created

    duplicate = await conn_api.post(
        "/v1/connections", json=servicenow_body(servicenow_sim), headers=auth(key)
    )
    assert duplicate.status_code == 409

    for path in (f"/v1/connections/{created['id']}", "/v1/connections/snow", "/v1/connections"):
        response = await conn_api.get(path, headers=auth(key))
        assert response.status_code == 200
        assert SN_PASSWORD not in response.text

    # at rest: ciphertext only, bound to its row (moving it to another connection fails)
    async with sessions() as session:
        row = (
            await session.execute(select(Connection).where(Connection.tenant_id == tenant_id))
        ).scalar_one()
        assert SN_PASSWORD.encode() not in row.credentials_ciphertext
        repo = ConnectionRepository(session, CredentialCipher.from_settings(conn_settings))
        assert repo.credentials(row)["password"] == SN_PASSWORD
        row.id = "conn_moved"
        with pytest.raises(Unavailable):
            repo.credentials(row)
        await session.rollback()

    patched = await conn_api.patch(
        f"/v1/connections/{created['id']}",
        json={"credentials": {"username": "integration", "password": "wrong"}},
        headers=auth(key),
    )
    assert patched.status_code == 200
    assert "wrong" not in patched.text
    bad = await conn_api.post(f"/v1/connections/{created['id']}/test", headers=auth(key))
    assert bad.status_code == 200
    assert bad.json()["ok"] is False
    assert bad.json()["kind"] == "auth"

    restored = await conn_api.patch(
        f"/v1/connections/{created['id']}",
        json={"credentials": {"username": "integration", "password": SN_PASSWORD}},
        headers=auth(key),
    )
    assert restored.status_code == 200
    ok = await conn_api.post(f"/v1/connections/{created['id']}/test", headers=auth(key))
    assert ok.json()["ok"] is True, ok.text

    unknown_field = await conn_api.patch(
        f"/v1/connections/{created['id']}", json={"secret": "x"}, headers=auth(key)
    )
    assert unknown_field.status_code == 422

    deleted = await conn_api.delete(f"/v1/connections/{created['id']}", headers=auth(key))
    assert deleted.status_code == 204
    assert (await conn_api.get(f"/v1/connections/{created['id']}", headers=auth(key))).status_code == 404

    async with sessions() as session:
        actions = (
            await session.execute(
                select(AuditEvent.action, AuditEvent.data).where(AuditEvent.tenant_id == tenant_id)
            )
        ).all()
    names = [a for a, _ in actions]
    assert names.count("connection.create") == 1
    assert names.count("connection.update") == 2
    assert "connection.delete" in names
    assert SN_PASSWORD not in str([d for _, d in actions])


async def test_blocking_connector_test_endpoint(
    conn_api: httpx.AsyncClient, make_key: MakeKey, tenant_id: str, salesforce_sim: RunningSimulator
) -> None:
    """Salesforce (simple-salesforce, blocking) over TLS with the operator's CA bundle."""
    key = await make_key(tenant_id)
    created = await create_connection(conn_api, key, salesforce_body(salesforce_sim))
    ok = await conn_api.post(f"/v1/connections/{created['id']}/test", headers=auth(key))
    assert ok.json()["ok"] is True, ok.text
    assert SF_SECRET not in ok.text


async def test_invalid_config_names_the_field_not_the_value(
    conn_api: httpx.AsyncClient, make_key: MakeKey, tenant_id: str, servicenow_sim: RunningSimulator
) -> None:
    key = await make_key(tenant_id)
    body = servicenow_body(servicenow_sim)
    body["credentials"] = {"username": "integration", "password": SN_PASSWORD, "extra": "zz-leak"}
    response = await conn_api.post("/v1/connections", json=body, headers=auth(key))
    assert response.status_code == 422
    assert "extra" in response.text
    assert "zz-leak" not in response.text
    assert SN_PASSWORD not in response.text
    unknown = await conn_api.post("/v1/connections", json={**body, "type": "nope"}, headers=auth(key))
    assert unknown.status_code == 422


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/",
        "http://169.254.169.254/",
        "http://localhost:8080/",
        "http://127.0.0.1:9/",
        "http://[::1]/",
        "http://192.168.0.10/",
    ],
)
async def test_private_hosts_are_refused_by_default(
    client: httpx.AsyncClient, make_key: MakeKey, tenant_id: str, url: str
) -> None:
    """The session app runs the default settings: no private or link-local targets."""
    key = await make_key(tenant_id)
    body = {
        "name": "snow",
        "type": "servicenow",
        "config": {"instance_url": url},
        "credentials": {"username": "u", "password": "p"},
    }
    response = await client.post("/v1/connections", json=body, headers=auth(key))
    assert response.status_code == 422, response.text
    assert "refused" in response.json()["detail"]


async def test_allowlist_lets_the_operator_reach_a_private_host(
    conn_api: httpx.AsyncClient, make_key: MakeKey, tenant_id: str, servicenow_sim: RunningSimulator
) -> None:
    key = await make_key(tenant_id)
    ok = await conn_api.post("/v1/connections", json=servicenow_body(servicenow_sim), headers=auth(key))
    assert ok.status_code == 201
    # ... but not another private range, even with 127.0.0.1 allowed; also on update and test
    refused = await conn_api.patch(
        f"/v1/connections/{ok.json()['id']}",
        json={"config": {"instance_url": "http://10.0.0.1/"}},
        headers=auth(key),
    )
    assert refused.status_code == 422


async def test_test_endpoint_rechecks_hosts(
    client: httpx.AsyncClient,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A row whose host is no longer allowed (settings changed) is refused at test time."""
    key = await make_key(tenant_id)
    body = servicenow_body(servicenow_sim)
    body["config"]["instance_url"] = "https://93.184.216.34/"
    created = await client.post("/v1/connections", json=body, headers=auth(key))
    assert created.status_code == 201, created.text
    async with sessions() as session, session.begin():  # behind the API's back
        await session.execute(
            update(Connection)
            .where(Connection.tenant_id == tenant_id)
            .values(config={"instance_url": servicenow_sim.base_url})
        )
    response = await client.post(f"/v1/connections/{created.json()['id']}/test", headers=auth(key))
    assert response.status_code == 422


async def test_other_tenant_sees_404_and_viewers_cannot_write(
    conn_api: httpx.AsyncClient, make_key: MakeKey, tenant_id: str, servicenow_sim: RunningSimulator
) -> None:
    key = await make_key(tenant_id)
    created = await create_connection(conn_api, key, servicenow_body(servicenow_sim))
    other = await make_key(f"{tenant_id}-b")
    for method, path in (
        ("GET", f"/v1/connections/{created['id']}"),
        ("PATCH", f"/v1/connections/{created['id']}"),
        ("DELETE", f"/v1/connections/{created['id']}"),
        ("POST", f"/v1/connections/{created['id']}/test"),
    ):
        response = await conn_api.request(
            method, path, json={} if method == "PATCH" else None, headers=auth(other)
        )
        assert response.status_code == 404, (method, path, response.text)
    listed = await conn_api.get("/v1/connections", headers=auth(other))
    assert listed.json()["data"] == []
    viewer = await make_key(tenant_id, role="viewer")
    refused = await conn_api.post(
        "/v1/connections", json=servicenow_body(servicenow_sim, name="v"), headers=auth(viewer)
    )
    assert refused.status_code == 403
    developer = await make_key(tenant_id, role="developer")
    assert (await conn_api.get("/v1/connections", headers=auth(developer))).status_code == 200


async def test_connector_tables_match_their_migration(engine: AsyncEngine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from core.db.models import Base
    from tests.unit.test_gateway_schema import _tables_of

    async with engine.connect() as conn:
        diffs = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    ours = {
        "connections",
        "connector_jobs",
        "connector_checkpoints",
        "connector_records",
        "connector_documents",
        "connector_record_jobs",
    }
    assert [d for d in diffs if ours & set(_tables_of(d))] == []
