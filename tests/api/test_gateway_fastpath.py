"""The gateway's hot path outside FastAPI's router (api.gateway.fast) and the in-memory key cache.

The fast path must answer exactly like the FastAPI route would: strict validation with the
OpenAI error envelope, the request context (request id, body limit), authentication. The key
cache must never outlive a revocation made by another API process.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY
from sqlalchemy import update

from api.auth import _MISSING
from core.db.models import ApiKey
from core.keys_service import evict_key
from tests.conftest import auth

CHAT = {"model": "sim-openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_fast_path_answers_like_the_route(client, make_key, tenant_id) -> None:
    key = await make_key(tenant_id, "developer")
    ok = await client.post("/v1/chat/completions", json=CHAT, headers={**auth(key), "x-request-id": "rid-1"})
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-request-id"] == "rid-1"
    assert ok.json()["choices"][0]["message"]["content"]
    assert ok.headers["x-nexus-model"] == "sim-openai/gpt-4o-mini"

    unknown = await client.post("/v1/chat/completions", json={**CHAT, "surprise": 1}, headers=auth(key))
    assert unknown.status_code == 400
    assert unknown.headers["content-type"] == "application/problem+json"
    body = unknown.json()
    assert body["code"] == "validation_error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["errors"][0]["loc"] == ["body", "surprise"]
    assert "input" not in body["errors"][0]  # submitted values are never echoed
    assert body["instance"] == "/v1/chat/completions"

    broken = await client.post(
        "/v1/chat/completions",
        content=b'{"model": ',
        headers={**auth(key), "content-type": "application/json"},
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == "validation_error"

    anonymous = await client.post("/v1/chat/completions", json=CHAT)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"

    huge = await client.post(
        "/v1/chat/completions",
        json={**CHAT, "messages": [{"role": "user", "content": "x" * 1_100_000}]},
        headers=auth(key),
    )
    assert huge.status_code == 413

    requests = REGISTRY.get_sample_value(
        "nexus_http_requests_total", {"method": "POST", "route": "/v1/chat/completions", "status": "200"}
    )
    assert requests is not None
    assert requests >= 1


async def test_key_cache_drops_a_key_revoked_by_another_process(
    settings, make_key, tenant_id, sessions
) -> None:
    from api.app import create_app

    application = create_app(settings)  # its own app, to reach its state
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            await _revoked_elsewhere(application.state.nexus, client, make_key, tenant_id, sessions)


async def _revoked_elsewhere(state, client, make_key, tenant_id, sessions) -> None:
    keys = state.gateway.keys
    for _ in range(200):  # the invalidation subscription comes up with the app
        if keys.live:
            break
        await asyncio.sleep(0.02)
    assert keys.live
    key = await make_key(tenant_id, "developer")
    prefix = key.split("_")[1]
    # The first call fills Redis from Postgres (Redis announces that fill, so nothing is kept in
    # memory from a lookup it overlapped); the second finds the record in Redis and keeps it.
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth(key))).status_code == 200
    assert keys.get(prefix) is not _MISSING  # served from memory from now on

    # Another API process revokes the key: its own database commit, then its Redis eviction.
    async with sessions() as session, session.begin():
        await session.execute(
            update(ApiKey).where(ApiKey.prefix == prefix).values(revoked_at=dt.datetime.now(dt.UTC))
        )
    await evict_key(state.redis, prefix)
    for _ in range(200):  # Redis announces the change to every process's cache
        if keys.get(prefix) is _MISSING:
            break
        await asyncio.sleep(0.01)
    assert keys.get(prefix) is _MISSING
    revoked = await client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert revoked.status_code == 401
    assert revoked.json()["detail"] == "API key revoked"


async def test_http_metric_labels_are_route_templates_never_client_values(
    client, make_key, tenant_id
) -> None:
    key = await make_key(tenant_id, "developer")
    await client.get(f"/v1/runs/{'r' * 12}", headers=auth(key))  # a templated route under /v1
    await client.request("BREW", "/v1/models", headers=auth(key))  # a method nobody defined
    await client.get("/v1/no-such-route-x1", headers=auth(key))
    samples = {
        (s.labels["method"], s.labels["route"])
        for metric in REGISTRY.collect()
        if metric.name == "nexus_http_requests"
        for s in metric.samples
        if s.name == "nexus_http_requests_total"
    }
    assert ("GET", "/v1/runs/{run_id}") in samples
    assert ("_OTHER", "/v1/models") in samples
    assert not any("rrrrrrrrrrrr" in route or "no-such-route" in route for _, route in samples)
    assert not any(method == "BREW" for method, _ in samples)
