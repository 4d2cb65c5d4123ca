"""``rerank: {method: "model"}`` on ``/search``: a provider model (the simulator) reorders the
fused candidates through the gateway's billed path; unparseable replies keep the fused order;
provider errors are problem+json."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.gateway_models import InferenceLog
from tests.api.test_knowledge_bases_api import (  # noqa: F401  (api_worker is a fixture)
    VPN,
    MakeKey,
    api_worker,
    make_kb,
    upload_text,
    wait_ready,
)
from tests.conftest import auth

BADGE = "Your badge number is printed on the back of your badge. Use it to sign in."
QUERY = "How do I sign in to the VPN client?"


async def _search(client: httpx.AsyncClient, key: str, kb: str, **extra: Any) -> httpx.Response:
    return await client.post(
        f"/v1/knowledge-bases/{kb}/search", json={"query": QUERY, "top_k": 2, **extra}, headers=auth(key)
    )


async def _logs(sessions: async_sessionmaker[AsyncSession], tenant_id: str, model: str) -> list[InferenceLog]:
    for _ in range(100):  # the inference log writer flushes in the background
        async with sessions() as session:
            rows = list(
                (
                    await session.scalars(
                        select(InferenceLog).where(
                            InferenceLog.tenant_id == tenant_id, InferenceLog.model == model
                        )
                    )
                ).all()
            )
        if rows:
            return rows
        await asyncio.sleep(0.05)
    return []


async def test_model_rerank_reorders_bills_and_falls_back(
    client: httpx.AsyncClient,
    api_worker: None,  # noqa: F811
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(client, key, name="rerank")
    vpn = await upload_text(client, key, kb, "VPN guide", VPN)
    badge = await upload_text(client, key, kb, "Badge policy", BADGE)
    for doc in (vpn, badge):
        assert (await wait_ready(client, key, kb, doc["id"]))["status"] == "ready"

    fused = await _search(client, key, kb)
    assert fused.status_code == 200, fused.text
    assert [h["document_title"] for h in fused.json()["data"]] == ["VPN guide", "Badge policy"]
    assert "rerank" not in fused.json()

    # The judge ranks the badge passage first: the order flips, and the call is billed and logged.
    judged = await _search(client, key, kb, rerank={"method": "model", "model": "sim-openai/rerank-judge"})
    assert judged.status_code == 200, judged.text
    body = judged.json()
    assert [h["document_title"] for h in body["data"]] == ["Badge policy", "VPN guide"]
    assert body["data"][0]["score"] > body["data"][1]["score"]
    rerank = body["rerank"]
    assert rerank["applied"]
    assert rerank["model"] == "sim-openai/rerank-judge"
    assert rerank["input_tokens"] > 0
    assert float(rerank["cost_usd"]) > 0
    logs = await _logs(sessions, tenant_id, "sim-openai/rerank-judge")
    assert len(logs) == 1
    assert logs[0].status == "ok"
    assert float(logs[0].cost_usd) == float(rerank["cost_usd"])

    # A model that answers prose: the fused order is kept, and the response says why.
    prose = await _search(client, key, kb, rerank={"method": "model", "model": "sim-openai/gpt-4o-mini"})
    assert prose.status_code == 200, prose.text
    assert [h["document_title"] for h in prose.json()["data"]] == ["VPN guide", "Badge policy"]
    assert not prose.json()["rerank"]["applied"]
    assert "no ranking" in prose.json()["rerank"]["error"]


async def test_model_rerank_errors_are_problems(
    client: httpx.AsyncClient,
    api_worker: None,  # noqa: F811
    make_key: MakeKey,
    tenant_id: str,
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(client, key, name="rerank-errors")
    for title, text in (("VPN guide", VPN), ("Badge policy", BADGE)):
        doc = await upload_text(client, key, kb, title, text)
        await wait_ready(client, key, kb, doc["id"])

    limited = await _search(client, key, kb, rerank={"method": "model", "model": "sim-openai/always-429"})
    assert limited.status_code == 429, limited.text
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert limited.json()["code"] == "upstream_rate_limit"

    no_model = await _search(client, key, kb, rerank={"method": "model"})
    assert no_model.status_code == 422
    bare = await _search(client, key, kb, rerank="model")
    assert bare.status_code == 422
    unknown_field = await _search(client, key, kb, rerank={"method": "model", "model": "x", "k": 1})
    assert unknown_field.status_code == 422

    scoped = await make_key(tenant_id, scopes=["models:sim-openai/gpt-4o-mini"])
    hidden = await _search(client, scoped, kb, rerank={"method": "model", "model": "sim-openai/rerank-judge"})
    assert hidden.status_code == 404, hidden.text
