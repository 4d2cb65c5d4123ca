"""Switching a knowledge base's embedding model re-embeds its chunks (ReembedKnowledgeBase), and
the local rerank stage re-orders candidates by query cosine + keyword score."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.rag_models import KbChunk, KnowledgeBase
from core.rag.search import Result, local_rerank
from core.rag.settings import LOCAL_MODEL
from core.rag.store import Hit
from tests.api.test_knowledge_bases_api import VPN, api_worker, make_kb, search, upload_text, wait_ready
from tests.conftest import auth

__all__ = ["api_worker"]
MakeKey = Callable[..., Awaitable[str]]
TARGET = "sim-openai/text-embedding-3-small"


async def test_switch_model_reembeds_every_chunk(
    client: httpx.AsyncClient,
    api_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(client, key, name=f"reembed-{uuid.uuid4().hex[:8]}")
    doc = await upload_text(client, key, kb, "VPN guide", VPN)
    assert (await wait_ready(client, key, kb, doc["id"]))["status"] == "ready"

    bad = await client.patch(
        f"/v1/knowledge-bases/{kb}",
        json={"embedding_model": "openai/text-embedding-3-small"},
        headers=auth(key),
    )
    assert bad.status_code in (404, 422), bad.text  # 1536 dims (or not in the test catalog)

    resp = await client.patch(
        f"/v1/knowledge-bases/{kb}", json={"embedding_model": TARGET}, headers=auth(key)
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["pending_embedding_model"] == TARGET
    assert body["reembed_run_id"].startswith(f"reembed:{tenant_id}:")
    # Search works while the switch runs.
    assert (await search(client, key, kb, "VPN badge"))[0]["document_id"] == doc["id"]

    for _ in range(300):
        out = (await client.get(f"/v1/knowledge-bases/{kb}", headers=auth(key))).json()
        if out["pending_embedding_model"] is None:
            break
        await asyncio.sleep(0.1)
    assert out["embedding_model"] == TARGET
    assert out["pending_embedding_model"] is None

    run = await _wait_run(client, key, body["reembed_run_id"])
    assert run["status"] == "completed", run
    assert run["result"]["reembedded"] == 1

    async with sessions() as session:
        models = (
            await session.scalars(select(KbChunk.embedding_model).where(KbChunk.kb_id == uuid.UUID(kb)))
        ).all()
    assert models
    assert set(models) == {TARGET}

    hits = await search(client, key, kb, "how do I get on the VPN?", mode="vector")
    assert hits[0]["document_id"] == doc["id"]
    assert (await search(client, key, kb, "VPN badge", rerank="local"))[0]["document_id"] == doc["id"]
    assert (await wait_ready(client, key, kb, doc["id"]))["status"] == "ready"
    assert LOCAL_MODEL != TARGET


async def _wait_switched(client: httpx.AsyncClient, key: str, kb: str) -> dict[str, object]:
    for _ in range(300):
        out: dict[str, object] = (await client.get(f"/v1/knowledge-bases/{kb}", headers=auth(key))).json()
        if out["pending_embedding_model"] is None:
            return out
        await asyncio.sleep(0.1)
    raise AssertionError(f"knowledge base {kb} still switching: {out}")


async def test_mid_switch_search_sees_both_models_then_restart_completes(
    client: httpx.AsyncClient,
    api_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A switch caught half-way (the pending model set, no run yet): a new upload embeds with the
    pending model, vector search finds chunks of both models, another model is refused (409),
    and repeating the pending model restarts the run, which finishes the switch."""
    key = await make_key(tenant_id)
    kb = await make_kb(client, key, name=f"midswitch-{uuid.uuid4().hex[:8]}")
    old = await upload_text(client, key, kb, "VPN guide", VPN)
    assert (await wait_ready(client, key, kb, old["id"]))["status"] == "ready"
    async with sessions() as session, session.begin():
        await session.execute(
            update(KnowledgeBase)
            .where(KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.id == uuid.UUID(kb))
            .values(pending_embedding_model=TARGET)
        )
    new = await upload_text(
        client, key, kb, "Printer guide", "Printers on floor two need a badge tap to release jobs."
    )
    assert (await wait_ready(client, key, kb, new["id"]))["status"] == "ready"
    async with sessions() as session:
        rows = (
            await session.execute(
                select(KbChunk.document_id, KbChunk.embedding_model).where(KbChunk.kb_id == uuid.UUID(kb))
            )
        ).all()
    assert {(str(d), m) for d, m in rows} == {(old["id"], LOCAL_MODEL), (new["id"], TARGET)}

    found = {h["document_id"] for h in await search(client, key, kb, "badge", mode="vector", top_k=5)}
    assert found == {old["id"], new["id"]}

    other = await client.patch(
        f"/v1/knowledge-bases/{kb}", json={"embedding_model": LOCAL_MODEL}, headers=auth(key)
    )
    assert other.status_code == 409, other.text
    again = await client.patch(
        f"/v1/knowledge-bases/{kb}", json={"embedding_model": TARGET}, headers=auth(key)
    )
    assert again.status_code == 200, again.text
    assert (await _wait_switched(client, key, kb))["embedding_model"] == TARGET
    async with sessions() as session:
        models = (
            await session.scalars(select(KbChunk.embedding_model).where(KbChunk.kb_id == uuid.UUID(kb)))
        ).all()
    assert set(models) == {TARGET}
    run = await _wait_run(client, key, again.json()["reembed_run_id"])
    assert run["status"] == "completed", run
    assert run["result"]["reembedded"] == 1


async def _wait_run(client: httpx.AsyncClient, key: str, run_id: str) -> dict[str, Any]:
    for _ in range(300):
        run: dict[str, Any] = (await client.get(f"/v1/runs/{run_id}", headers=auth(key))).json()
        if run["status"] not in ("pending", "running"):
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish: {run}")


def _result(chunk_id: int, score: float, keyword: float | None) -> Result:
    hit = Hit(chunk_id, "d", "t", chunk_id, "x", None, None, {}, score)
    return Result(hit=hit, score=score, keyword_score=keyword)


def test_local_rerank_reorders_by_cosine_and_keyword() -> None:
    query = [1.0, 0.0]
    fused = [_result(1, 0.03, 0.9), _result(2, 0.02, 1.0), _result(3, 0.01, None)]
    vectors = {1: [0.0, 1.0], 2: [1.0, 0.0], 3: [0.8, 0.6]}
    out = local_rerank(fused, vectors, query)
    # 2: .7*1 + .3*1 = 1.0; 3: .7*.8 = .56; 1: .7*0 + .3*.9 = .27
    assert [r.hit.chunk_id for r in out] == [2, 3, 1]
    assert abs(out[0].score - 1.0) < 1e-6
