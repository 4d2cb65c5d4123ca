"""Tenants, users and keys over HTTP with real Postgres and Valkey."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx

from tests.conftest import auth


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = resp.json()
    assert body["code"] == code
    assert body["status"] == status
    assert "Traceback" not in resp.text
    return body


async def test_key_lifecycle_created_listed_revoked_401_at_once(client, make_key, tenant_id) -> None:
    owner = await make_key(tenant_id, "owner")
    resp = await client.post("/v1/keys", json={"name": "ci", "role": "developer"}, headers=auth(owner))
    assert resp.status_code == 201, resp.text
    created = resp.json()
    new_key = created["key"]
    assert new_key.startswith("nx_")
    # usable, and now cached in Redis
    assert (await client.get("/v1/keys", headers=auth(new_key))).status_code == 200
    listed = (await client.get("/v1/keys", headers=auth(owner))).json()["data"]
    assert created["id"] in {k["id"] for k in listed}
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    revoked = await client.post(f"/v1/keys/{created['id']}/revoke", headers=auth(owner))
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    body = assert_problem(await client.get("/v1/keys", headers=auth(new_key)), 401, "unauthenticated")
    assert "revoked" in str(body["detail"])


async def test_expired_key_is_401(client, make_key, tenant_id) -> None:
    key = await make_key(tenant_id, "owner", expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert (await client.get("/v1/keys", headers=auth(key))).status_code == 200
    await asyncio.sleep(1.2)
    body = assert_problem(await client.get("/v1/keys", headers=auth(key)), 401, "unauthenticated")
    assert "expired" in str(body["detail"])


async def test_missing_malformed_and_wrong_keys_are_401(client, make_key, tenant_id) -> None:
    key = await make_key(tenant_id)
    assert_problem(await client.get("/v1/keys"), 401, "unauthenticated")
    assert_problem(await client.get("/v1/keys", headers=auth("garbage")), 401, "unauthenticated")
    tampered = key[:-3] + ("aaa" if not key.endswith("aaa") else "bbb")
    resp = await client.get("/v1/keys", headers=auth(tampered))
    assert_problem(resp, 401, "unauthenticated")
    assert tampered not in resp.text


async def test_key_cannot_mint_more_rights_than_its_own(client, make_key, tenant_id) -> None:
    dev = await make_key(tenant_id, "developer", scopes=["models:sim-*"])
    for body in (
        {"role": "admin", "scopes": ["models:sim-a"]},
        {"role": "owner", "scopes": ["models:sim-a"]},
        {"role": "auditor", "scopes": ["models:sim-a"]},
        {"role": "developer"},  # unscoped > scoped
        {"role": "developer", "scopes": ["models:*"]},
        {"role": "developer", "scopes": ["models:other"]},
        {"role": "viewer", "scopes": ["models:sim-a"], "tenant_id": "someone-else"},
    ):
        assert_problem(await client.post("/v1/keys", json=body, headers=auth(dev)), 403, "forbidden")
    ok = await client.post(
        "/v1/keys", json={"role": "viewer", "scopes": ["models:sim-openai/*"]}, headers=auth(dev)
    )
    assert ok.status_code == 201, ok.text


async def test_expiring_key_cannot_mint_longer_lived_key(client, make_key, tenant_id) -> None:
    key = await make_key(tenant_id, "admin", expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    resp = await client.post("/v1/keys", json={"role": "viewer", "expires_in_days": 30}, headers=auth(key))
    assert_problem(resp, 403, "forbidden")
    resp = await client.post("/v1/keys", json={"role": "viewer"}, headers=auth(key))
    assert_problem(resp, 403, "forbidden")


async def test_viewer_cannot_create_keys_or_users(client, make_key, tenant_id) -> None:
    viewer = await make_key(tenant_id, "viewer")
    assert_problem(
        await client.post("/v1/keys", json={"role": "viewer"}, headers=auth(viewer)), 403, "forbidden"
    )
    resp = await client.post(
        "/v1/users", json={"email": "a@example.com", "role": "viewer"}, headers=auth(viewer)
    )
    assert_problem(resp, 403, "forbidden")


async def test_cross_tenant_objects_are_404(client, make_key) -> None:
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    key_a, key_b = await make_key(a), await make_key(b)
    other_key = (await client.post("/v1/keys", json={"role": "viewer"}, headers=auth(key_b))).json()
    user = await client.post(
        "/v1/users", json={"email": "u@example.com", "role": "viewer"}, headers=auth(key_b)
    )
    assert user.status_code == 201, user.text
    user_id = user.json()["id"]
    for method, path, body in (
        ("GET", f"/v1/keys/{other_key['id']}", None),
        ("POST", f"/v1/keys/{other_key['id']}/revoke", None),
        ("DELETE", f"/v1/keys/{other_key['id']}", None),
        ("GET", f"/v1/users/{user_id}", None),
        ("PATCH", f"/v1/users/{user_id}", {"role": "admin"}),
        ("GET", f"/v1/tenants/{b}", None),
        ("PATCH", f"/v1/tenants/{b}", {"name": "pwned"}),
    ):
        resp = await client.request(method, path, json=body, headers=auth(key_a))
        assert_problem(resp, 404, "not_found")
    # and B's key still works: A's attempts changed nothing
    assert (await client.get(f"/v1/keys/{other_key['id']}", headers=auth(key_b))).json()["revoked_at"] is None
    tenants = (await client.get("/v1/tenants", headers=auth(key_a))).json()["data"]
    assert [t["id"] for t in tenants] == [a]


async def test_platform_key_manages_tenants(client, make_key) -> None:
    platform = await make_key(f"p-{uuid.uuid4().hex[:8]}", "owner", platform=True)
    new_id = f"acme-{uuid.uuid4().hex[:6]}"
    resp = await client.post("/v1/tenants", json={"id": new_id, "name": "Acme"}, headers=auth(platform))
    assert resp.status_code == 201, resp.text
    assert_problem(
        await client.post("/v1/tenants", json={"id": new_id, "name": "Acme"}, headers=auth(platform)),
        409,
        "conflict",
    )
    minted = await client.post(
        "/v1/keys", json={"role": "admin", "tenant_id": new_id}, headers=auth(platform)
    )
    assert minted.status_code == 201, minted.text
    tenant_key = minted.json()["key"]
    assert (await client.get("/v1/keys", headers=auth(tenant_key))).status_code == 200
    # an ordinary tenant owner cannot create tenants
    assert_problem(
        await client.post("/v1/tenants", json={"id": "x" + new_id, "name": "X"}, headers=auth(tenant_key)),
        403,
        "forbidden",
    )
    # disabling the tenant locks its keys out at once
    resp = await client.patch(f"/v1/tenants/{new_id}", json={"disabled": True}, headers=auth(platform))
    assert resp.status_code == 200
    assert_problem(await client.get("/v1/keys", headers=auth(tenant_key)), 401, "unauthenticated")


async def test_bad_bodies_get_problem_json(client, make_key, tenant_id) -> None:
    key = await make_key(tenant_id)
    body = assert_problem(
        await client.post("/v1/keys", json={"role": "viewer", "surprise": 1}, headers=auth(key)),
        422,
        "validation_error",
    )
    assert body["errors"]
    assert_problem(
        await client.post(
            "/v1/keys", content=b"{not json", headers={**auth(key), "content-type": "application/json"}
        ),
        422,
        "validation_error",
    )
    assert_problem(
        await client.post("/v1/keys", json={"role": "emperor"}, headers=auth(key)), 422, "validation_error"
    )
    assert_problem(await client.get("/v1/keys/not-a-uuid", headers=auth(key)), 422, "validation_error")
    huge = {"role": "viewer", "name": "x" * 2_000_000}
    assert_problem(await client.post("/v1/keys", json=huge, headers=auth(key)), 413, "payload_too_large")
    assert_problem(await client.get("/v1/nope", headers=auth(key)), 404, "not_found")
    assert_problem(await client.get("/v1/keys?cursor=%%%", headers=auth(key)), 400, "bad_request")


async def test_duplicate_user_is_409_and_nothing_half_written(client, make_key, tenant_id) -> None:
    key = await make_key(tenant_id)
    body = {"email": "dup@example.com", "role": "developer"}
    assert (await client.post("/v1/users", json=body, headers=auth(key))).status_code == 201
    assert_problem(await client.post("/v1/users", json=body, headers=auth(key)), 409, "conflict")
    users = (await client.get("/v1/users", headers=auth(key))).json()["data"]
    assert [u["email"] for u in users] == ["dup@example.com"]


async def test_rate_limit_answers_429_with_retry_after(client, make_key, tenant_id) -> None:
    key = await make_key(tenant_id, rate_limit_per_minute=3)
    statuses = [(await client.get("/v1/keys", headers=auth(key))).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200]
    resp = await client.get("/v1/keys", headers=auth(key))
    assert_problem(resp, 429, "rate_limited")
    assert int(resp.headers["retry-after"]) >= 1


async def test_health_ready_metrics_and_request_id(client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"postgres", "redis", "temporal"}
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert resp.headers["x-request-id"] == "abc123"
    metrics = await client.get("/metrics")
    assert "nexus_http_requests_total" in metrics.text
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/keys" in spec["paths"]
