"""The audit API over HTTP against the shared database (read-only checks: never damage it)."""

from __future__ import annotations

import base64
import datetime as dt
import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.governance import audit
from core.governance.audit_head import SignedHead, load_signing_key, signed_payload
from tests.conftest import auth


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = resp.json()
    assert body["code"] == code
    assert "Traceback" not in resp.text
    return body


async def seed(sessions: async_sessionmaker[AsyncSession], tenant_id: str, *actions: str) -> None:
    async with sessions() as session, session.begin():
        for i, action in enumerate(actions):
            await audit.append(
                session, actor=f"key:test-{i % 2}", action=action, tenant_id=tenant_id, data={"i": i}
            )


async def list_all(client: httpx.AsyncClient, key: str, **params: str | int) -> list[dict[str, object]]:
    """Follow ``next_cursor`` to the end."""
    events: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        resp = await client.get("/v1/audit/events", params=query, headers=auth(key))
        assert resp.status_code == 200, resp.text
        page = resp.json()
        events += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return events


async def test_auditor_sees_only_its_own_tenants_events(client, make_key, sessions) -> None:
    tenant_a, tenant_b = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    owner_a = await make_key(tenant_a, "owner")
    created = await client.post("/v1/keys", json={"role": "viewer", "name": "ci"}, headers=auth(owner_a))
    assert created.status_code == 201, created.text
    await seed(sessions, tenant_b, "test.secret_of_b")
    auditor_a, auditor_b = await make_key(tenant_a, "auditor"), await make_key(tenant_b, "auditor")

    seen_a = await list_all(client, auditor_a)
    assert {e["tenant_id"] for e in seen_a} == {tenant_a}
    assert any(e["action"] == "key.create" and e["target"] == f"key:{created.json()['id']}" for e in seen_a)
    assert all(set(e) >= {"seq", "hash", "prev_hash", "created_at", "actor", "data"} for e in seen_a)
    seen_b = await list_all(client, auditor_b)
    assert {e["tenant_id"] for e in seen_b} == {tenant_b}
    assert [e["action"] for e in seen_b] == ["test.secret_of_b"]

    own = await list_all(client, auditor_a, tenant_id=tenant_a)
    assert own == seen_a
    other = await client.get("/v1/audit/events", params={"tenant_id": tenant_b}, headers=auth(auditor_a))
    assert_problem(other, 404, "not_found")


async def test_roles_without_audit_read_get_403(client, make_key, tenant_id) -> None:
    for role in ("viewer", "developer", "approver"):
        key = await make_key(tenant_id, role)
        for path in ("/v1/audit/events", "/v1/audit/verify", "/v1/audit/head"):
            body = assert_problem(await client.get(path, headers=auth(key)), 403, "forbidden")
            assert "audit:read" in str(body["detail"])
    assert_problem(await client.get("/v1/audit/events"), 401, "unauthenticated")


async def test_filters_and_cursor_pagination(client, make_key, sessions, tenant_id) -> None:
    key = await make_key(tenant_id, "auditor")
    before = dt.datetime.now(dt.UTC)
    await seed(sessions, tenant_id, "test.alpha", "test.beta", "test.alpha", "test.beta", "test.alpha")

    paged = await list_all(client, key, limit=2, action="test.*")
    seqs = [int(str(e["seq"])) for e in paged]
    assert len(seqs) == 5
    assert seqs == sorted(set(seqs))
    first = (await client.get("/v1/audit/events", params={"limit": 2}, headers=auth(key))).json()
    assert len(first["data"]) == 2
    assert first["next_cursor"]

    assert len(await list_all(client, key, action="test.alpha")) == 3
    assert len(await list_all(client, key, action="test.", limit=50)) == 0  # exact unless `*`
    assert {e["actor"] for e in await list_all(client, key, actor="key:test-1")} == {"key:test-1"}
    assert len(await list_all(client, key, action="test.*", since=before.isoformat())) == 5
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert await list_all(client, key, since=future) == []

    naive = await client.get("/v1/audit/events", params={"since": "2020-01-01T00:00:00"}, headers=auth(key))
    assert_problem(naive, 422, "validation_error")
    bad = await client.get("/v1/audit/events", params={"cursor": "not-a-cursor"}, headers=auth(key))
    assert_problem(bad, 400, "bad_request")
    too_big = await client.get("/v1/audit/events", params={"limit": 10_000}, headers=auth(key))
    assert_problem(too_big, 422, "validation_error")


async def test_platform_key_may_look_across_tenants(client, make_key, sessions) -> None:
    platform = f"p-{uuid.uuid4().hex[:10]}"
    tenant_a, tenant_b = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    marker = f"test.cross_{uuid.uuid4().hex[:8]}"
    await seed(sessions, tenant_a, marker)
    await seed(sessions, tenant_b, marker)
    key = await make_key(platform, "auditor", platform=True)
    everywhere = await list_all(client, key, action=marker)
    assert {e["tenant_id"] for e in everywhere} == {tenant_a, tenant_b}
    only_b = await list_all(client, key, action=marker, tenant_id=tenant_b)
    assert [e["tenant_id"] for e in only_b] == [tenant_b]


async def test_verify_is_ok_on_the_shared_database(client, make_key, sessions, tenant_id) -> None:
    await seed(sessions, tenant_id, "test.verify")
    key = await make_key(tenant_id, "auditor")
    resp = await client.get("/v1/audit/verify", headers=auth(key))
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["ok"] is True, result
    assert result["first_broken_seq"] is None
    assert result["reason"] is None
    assert result["checked"] == result["head_seq"] >= 1
    ranged = (
        await client.get("/v1/audit/verify", params={"from_seq": 1, "to_seq": 1}, headers=auth(key))
    ).json()
    assert (ranged["ok"], ranged["checked"], ranged["head_seq"]) == (True, 1, 1)
    assert_problem(
        await client.get("/v1/audit/verify?from_seq=0", headers=auth(key)), 422, "validation_error"
    )


async def test_head_export_and_verify_round_trip(client, make_key, sessions, tenant_id) -> None:
    await seed(sessions, tenant_id, "test.head")
    key = await make_key(tenant_id, "auditor")
    resp = await client.get("/v1/audit/head", headers=auth(key))
    assert resp.status_code == 200, resp.text
    head = resp.json()
    assert head["seq"] >= 1
    assert len(head["hash"]) == 64
    assert head["key_id"].startswith("ed25519:")
    assert head["alg"] == "Ed25519"
    assert head["signature"]

    checked = await client.post("/v1/audit/head/verify", json=head, headers=auth(key))
    assert checked.status_code == 200, checked.text
    assert checked.json()["ok"] is True, checked.json()

    await seed(sessions, tenant_id, "test.after_head")  # the chain grows past the head: still fine
    later = (await client.post("/v1/audit/head/verify", json=head, headers=auth(key))).json()
    assert later["ok"] is True
    assert later["head_seq"] > head["seq"]

    forged = {**head, "hash": "f" * 64}
    rejected = (await client.post("/v1/audit/head/verify", json=forged, headers=auth(key))).json()
    assert rejected["ok"] is False
    assert "signature" in rejected["reason"]


async def test_head_beyond_the_chain_is_reported_as_truncation(client, make_key, settings: Settings) -> None:
    """A genuinely signed head whose seq the log no longer holds (as after a deleted tail);
    signed here with the server's key so the shared database is never damaged."""
    key = await make_key(f"t-{uuid.uuid4().hex[:10]}", "auditor")
    current = (await client.get("/v1/audit/head", headers=auth(key))).json()
    ahead = SignedHead.model_validate({**current, "seq": current["seq"] + 3, "signature": ""})
    assert settings.security.audit_signing_key is not None
    private = load_signing_key(settings.security.audit_signing_key.get_secret_value())
    signature = base64.b64encode(private.sign(signed_payload(ahead))).decode()
    body = ahead.model_copy(update={"signature": signature}).model_dump(mode="json")
    result = (await client.post("/v1/audit/head/verify", json=body, headers=auth(key))).json()
    assert result["ok"] is False
    assert "truncated" in result["reason"]
    assert result["first_broken_seq"] == result["head_seq"] + 1


async def test_head_verify_body_is_strict(client, make_key, tenant_id) -> None:
    key = await make_key(tenant_id, "auditor")
    head = (await client.get("/v1/audit/head", headers=auth(key))).json()
    resp = await client.post(
        "/v1/audit/head/verify", json={**head, "note": "sneaky-value-42"}, headers=auth(key)
    )
    body = assert_problem(resp, 422, "validation_error")
    assert "sneaky-value-42" not in resp.text  # submitted values are never echoed
    assert any(e["loc"] == ["body", "note"] for e in body["errors"])  # type: ignore[attr-defined]
    naive = {**head, "exported_at": "2020-01-01T00:00:00"}
    assert_problem(
        await client.post("/v1/audit/head/verify", json=naive, headers=auth(key)), 422, "validation_error"
    )
    viewer = await make_key(tenant_id, "viewer")
    assert_problem(
        await client.post("/v1/audit/head/verify", json=head, headers=auth(viewer)), 403, "forbidden"
    )


async def test_broken_chain_answers_200_naming_the_first_broken_seq(
    settings: Settings, fresh_database: str, pg_port: int
) -> None:
    """A second app on a throwaway database, so the shared one is never damaged."""
    from asgi_lifespan import LifespanManager
    from sqlalchemy.ext.asyncio import create_async_engine

    from api.app import create_app
    from core.db.engine import make_sessionmaker
    from core.identity import Role
    from core.keys_service import create_tenant, issue_key
    from tests.conftest import psql

    isolated = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": fresh_database})}
    )
    engine = create_async_engine(fresh_database)
    sessions = make_sessionmaker(engine)
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    assert settings.security.key_pepper is not None
    async with sessions() as session, session.begin():
        await create_tenant(session, tenant_id=tenant, name=tenant)
        _, key = await issue_key(
            session,
            tenant_id=tenant,
            role=Role.auditor,
            name="t",
            scopes=None,
            expires_at=None,
            created_by="test",
            pepper=settings.security.key_pepper.get_secret_value(),
        )
    await seed(sessions, tenant, "test.a", "test.b", "test.c", "test.d")
    await engine.dispose()
    tampered = psql(
        pg_port,
        "ALTER TABLE audit_events DISABLE TRIGGER USER; "
        "UPDATE audit_events SET data = '{\"i\": 99}' WHERE seq = 2; "
        "ALTER TABLE audit_events ENABLE TRIGGER USER;",
        database=fresh_database.rsplit("/", 1)[1],
    )
    assert tampered.returncode == 0, tampered.stderr

    app = create_app(isolated)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            resp = await http.get("/v1/audit/verify", headers=auth(key))
            head = (await http.get("/v1/audit/head", headers=auth(key))).json()
            against = (await http.post("/v1/audit/head/verify", json=head, headers=auth(key))).json()
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["ok"] is False
    assert result["first_broken_seq"] == 2
    assert result["reason"] == "hash mismatch: row altered"
    assert (result["checked"], result["head_seq"]) == (1, 4)
    assert against["ok"] is False
    assert against["first_broken_seq"] == 2
