"""Inference logs, budgets and tenant gateway settings over HTTP."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.api.test_gateway import live_url, sdk  # noqa: F401  (session fixture reused)
from tests.conftest import auth

CHAT = {
    "model": "sim-openai/gpt-4o-mini",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}


async def _logs(client: httpx.AsyncClient, key: str, count: int, **params: str) -> list[dict]:
    for _ in range(100):
        resp = await client.get("/v1/inference-logs", params=params, headers=auth(key))
        assert resp.status_code == 200, resp.text
        data = resp.json()["data"]
        if len(data) >= count:
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} logs, got {len(data)}")


async def test_logs_are_tenant_scoped_and_content_is_opt_in(client, make_key, tenant_id) -> None:
    key = await make_key(tenant_id, "owner")
    other = await make_key(f"x-{tenant_id}", "owner")
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth(key))).status_code == 200
    first = await _logs(client, key, 1, include_content="true")
    assert first[0]["model"] == "sim-openai/gpt-4o-mini"
    assert first[0]["content"] is None
    assert (await client.get("/v1/inference-logs", headers=auth(other))).json()["data"] == []

    resp = await client.put("/v1/gateway/settings", json={"log_content": True}, headers=auth(key))
    assert resp.status_code == 200, resp.text
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth(key))).status_code == 200
    logs = await _logs(client, key, 2, include_content="true")
    assert logs[0]["content"]["answer"] == "The capital of France is Paris."
    assert logs[0]["content"]["messages"][0]["content"] == "What is the capital of France?"
    # a viewer sees the metadata but never the content
    viewer = await make_key(tenant_id, "viewer")
    seen = await _logs(client, viewer, 2, include_content="true")
    assert all("content" not in row for row in seen)
    only_ok = await _logs(client, key, 2, status="ok", model="sim-openai/gpt-4o-mini")
    assert len(only_ok) == 2
    page = (await client.get("/v1/inference-logs", params={"limit": 1}, headers=auth(key))).json()
    assert len(page["data"]) == 1
    assert page["next_cursor"]


async def test_tenant_settings_apply_at_once_and_need_admin(client, make_key, tenant_id) -> None:
    owner = await make_key(tenant_id, "owner")
    dev = await make_key(tenant_id, "developer")
    assert (
        await client.put("/v1/gateway/settings", json={"tenant_rpm": 1}, headers=auth(dev))
    ).status_code == 403
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth(dev))).status_code == 200
    assert (
        await client.put("/v1/gateway/settings", json={"tenant_rpm": 1}, headers=auth(owner))
    ).status_code == 200
    # The cached key record was refreshed: the new tenant limit counts from now on.
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth(owner))).status_code == 200
    limited = await client.post("/v1/chat/completions", json=CHAT, headers=auth(dev))
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"]["type"] == "rate_limit_error"
    bad = await client.put("/v1/gateway/settings", json={"tenant_rpm": 0}, headers=auth(owner))
    assert bad.status_code == 422


async def test_budget_api(client, make_key, tenant_id) -> None:
    owner = await make_key(tenant_id, "owner")
    resp = await client.put(
        "/v1/budgets", json={"scope": "tenant", "monthly_limit_usd": "0.000001"}, headers=auth(owner)
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["monthly_limit_usd"] == "0.000001"
    over = await client.post("/v1/chat/completions", json=CHAT, headers=auth(owner))
    assert over.status_code == 402
    assert over.json()["code"] == "budget_exceeded"
    listed = (await client.get("/v1/budgets", headers=auth(owner))).json()["data"]
    assert listed[0]["scope"] == "tenant"
    # a key budget must name a key of this tenant
    foreign = await client.put(
        "/v1/budgets",
        json={"scope": "key", "key_id": str(uuid.uuid4()), "monthly_limit_usd": "1"},
        headers=auth(owner),
    )
    assert foreign.status_code == 404
    removed = await client.put(
        "/v1/budgets", json={"scope": "tenant", "monthly_limit_usd": None}, headers=auth(owner)
    )
    assert removed.status_code == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth(owner))).status_code == 200
