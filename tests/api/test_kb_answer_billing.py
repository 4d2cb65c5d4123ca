"""Billing of knowledge-base model calls: ``/answer`` (mode ``model``) goes through the gateway's
admitted path (one inference-log row with the reported cost; provider errors are problem+json;
"not found" calls no model), and a provider embedding model's query embeddings are billed on
``/search``, ``/answer`` and NEXUS retrieval (the local model stays free)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.gateway_models import InferenceLog
from core.db.orchestration_models import ModelCall
from tests.api.test_knowledge_bases_api import (  # noqa: F401  (api_worker is a fixture)
    VPN,
    MakeKey,
    api_worker,
    upload_text,
    wait_ready,
)
from tests.api.test_nexus_api import wait_closed
from tests.conftest import auth
from tests.workflows.orchestration_support import GEMINI, MINI

CHAT = "sim-openai/gpt-4o-mini"
EMBED = "sim-openai/text-embedding-3-small"
QUESTION = "How do I connect to the VPN?"


async def _rows(sessions: async_sessionmaker[AsyncSession], tenant_id: str, model: str) -> list[InferenceLog]:
    async with sessions() as session:
        stmt = select(InferenceLog).where(InferenceLog.tenant_id == tenant_id, InferenceLog.model == model)
        return list((await session.scalars(stmt)).all())


async def _settled(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, model: str, at_least: int
) -> list[InferenceLog]:
    """The model's rows once ``at_least`` are there (the log writer flushes in the background),
    read again a little later so a stray extra row would show."""
    for _ in range(100):
        if len(await _rows(sessions, tenant_id, model)) >= at_least:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    return await _rows(sessions, tenant_id, model)


async def _kb(client: httpx.AsyncClient, key: str, name: str, embedding_model: str | None = None) -> str:
    body: dict[str, Any] = {"name": name}
    if embedding_model is not None:
        body["embedding_model"] = embedding_model
    resp = await client.post("/v1/knowledge-bases", json=body, headers=auth(key))
    assert resp.status_code == 201, resp.text
    kb = str(resp.json()["id"])
    doc = await upload_text(client, key, kb, "VPN guide", VPN)
    assert (await wait_ready(client, key, kb, doc["id"]))["status"] == "ready"
    return kb


async def _answer(
    client: httpx.AsyncClient, key: str, kb: str, model: str, query: str, **extra: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/knowledge-bases/{kb}/answer", json={"model": model, "query": query, **extra}, headers=auth(key)
    )


async def test_answer_is_billed_once_and_not_found_calls_no_model(
    client: httpx.AsyncClient,
    api_worker: None,  # noqa: F811
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb = await _kb(client, key, "answer-billing")

    found = await _answer(client, key, kb, CHAT, QUESTION)
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["found"]
    usage = body["usage"]
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] > 0
    assert float(usage["cost_usd"]) > 0
    (row,) = await _settled(sessions, tenant_id, CHAT, 1)
    assert row.status == "ok"
    assert row.request_id.endswith(":answer")
    assert row.input_tokens == usage["input_tokens"]
    assert row.output_tokens == usage["output_tokens"]
    assert float(row.cost_usd) == float(usage["cost_usd"])
    assert row.key_id is not None

    # Nothing relevant: the answer says so, and no model is called (no new row, no usage).
    missing = await _answer(client, key, kb, CHAT, "What is the boiling point of tungsten?")
    assert missing.status_code == 200, missing.text
    assert missing.json() == {
        "answer": "Not found in the knowledge base.",
        "found": False,
        "model": None,
        "citations": [],
    }
    assert len(await _settled(sessions, tenant_id, CHAT, 1)) == 1
    # The local embedding model is free: no gateway call at all besides the one answer.
    async with sessions() as session:
        rows = (await session.scalars(select(InferenceLog).where(InferenceLog.tenant_id == tenant_id))).all()
    assert [r.model for r in rows] == [CHAT]


async def test_answer_provider_errors_are_problems(
    client: httpx.AsyncClient,
    api_worker: None,  # noqa: F811
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb = await _kb(client, key, "answer-errors")

    limited = await _answer(client, key, kb, "sim-openai/always-429", QUESTION)
    assert limited.status_code == 429, limited.text
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert limited.json()["code"] == "upstream_rate_limit"
    assert "Traceback" not in limited.text

    broken = await _answer(client, key, kb, "sim-openai/always-500", QUESTION)
    assert broken.status_code == 502, broken.text
    assert broken.headers["content-type"].startswith("application/problem+json")
    assert broken.json()["code"] == "upstream_server"

    # Each failed call is logged once, as an error that cost nothing.
    for model, kind in (("sim-openai/always-429", "rate_limit"), ("sim-openai/always-500", "server")):
        (row,) = await _settled(sessions, tenant_id, model, 1)
        assert row.status == "error"
        assert row.error_code == kind
        assert float(row.cost_usd) == 0


async def test_provider_query_embeddings_are_billed(
    client: httpx.AsyncClient,
    api_worker: None,  # noqa: F811
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb = await _kb(client, key, "provider-embeddings", embedding_model=EMBED)
    assert await _rows(sessions, tenant_id, EMBED) == []  # ingestion is the worker's (not a gateway call)

    search = await client.post(
        f"/v1/knowledge-bases/{kb}/search", json={"query": QUESTION}, headers=auth(key)
    )
    assert search.status_code == 200, search.text
    (row,) = await _settled(sessions, tenant_id, EMBED, 1)
    assert row.status == "ok"
    assert row.request_id.endswith(":embed")
    assert row.input_tokens > 0
    assert float(row.cost_usd) > 0

    # Keyword-only search embeds nothing.
    keyword = await client.post(
        f"/v1/knowledge-bases/{kb}/search", json={"query": QUESTION, "mode": "keyword"}, headers=auth(key)
    )
    assert keyword.status_code == 200, keyword.text
    assert len(await _settled(sessions, tenant_id, EMBED, 1)) == 1

    # /answer: one embedding row and one answer row, under the same request (the simulator's
    # vectors are not semantic, so every passage is let through).
    answered = await _answer(client, key, kb, CHAT, QUESTION, min_score=-1)
    assert answered.status_code == 200, answered.text
    embeds = await _settled(sessions, tenant_id, EMBED, 2)
    assert len(embeds) == 2
    (chat_row,) = await _settled(sessions, tenant_id, CHAT, 1)
    rid = chat_row.request_id.removesuffix(":answer")
    assert f"{rid}:embed" in {r.request_id for r in embeds}

    # NEXUS retrieval: the query embedding is a billed model call of the run.
    resp = await client.post(
        f"/v1/knowledge-bases/{kb}/answer",
        json={
            "mode": "nexus",
            "query": QUESTION,
            "nexus": {"models": [MINI, GEMINI], "strategy": "majority"},
        },
        headers=auth(key),
    )
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["id"]
    await wait_closed(client, key, run_id)
    async with sessions() as session:
        calls = (
            await session.scalars(
                select(ModelCall).where(
                    ModelCall.tenant_id == tenant_id, ModelCall.call_key.startswith(f"{run_id}:retrieve:")
                )
            )
        ).all()
    assert [c.model for c in calls] == [EMBED]
    assert calls[0].input_tokens > 0
    assert float(calls[0].cost_usd) > 0
