"""``/v1/knowledge-bases`` over HTTP with a real worker on the API's task queue (local embedder)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.db.models import AuditEvent
from core.db.rag_models import KbChunk
from core.temporal.client import connect
from tests.conftest import FIXTURES, auth
from workers.main import build_worker

MakeKey = Callable[..., Awaitable[str]]
VPN = "To connect to the corporate VPN, install the client and sign in with your badge number."


@pytest_asyncio.fixture(scope="module")
async def api_worker(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    client = await connect(settings)
    redis = Redis.from_url(settings.redis.url)
    async with build_worker(client, settings, sessions, redis, settings.temporal.task_queue):
        yield
    await redis.aclose()


async def make_kb(client: httpx.AsyncClient, key: str, name: str = "handbook") -> str:
    resp = await client.post("/v1/knowledge-bases", json={"name": name}, headers=auth(key))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def upload_text(client: httpx.AsyncClient, key: str, kb: str, title: str, text: str) -> dict[str, Any]:
    resp = await client.post(
        f"/v1/knowledge-bases/{kb}/documents", json={"title": title, "text": text}, headers=auth(key)
    )
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


async def wait_ready(client: httpx.AsyncClient, key: str, kb: str, doc: str) -> dict[str, Any]:
    for _ in range(300):
        resp = await client.get(f"/v1/knowledge-bases/{kb}/documents/{doc}", headers=auth(key))
        out: dict[str, Any] = resp.json()
        if out["status"] in ("ready", "failed"):
            return out
        await asyncio.sleep(0.1)
    raise AssertionError(f"document {doc} not indexed: {out}")


async def search(
    client: httpx.AsyncClient, key: str, kb: str, query: str, **extra: Any
) -> list[dict[str, Any]]:
    resp = await client.post(
        f"/v1/knowledge-bases/{kb}/search", json={"query": query, **extra}, headers=auth(key)
    )
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


async def test_upload_ingest_search_dedup_delete(
    client: httpx.AsyncClient,
    api_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(client, key)
    doc = await upload_text(client, key, kb, "VPN guide", VPN)
    assert doc["run_id"].startswith(f"ingest:{tenant_id}:")
    assert not doc["duplicate"]
    ready = await wait_ready(client, key, kb, doc["id"])
    assert ready["status"] == "ready"
    assert ready["chunk_count"] == 1

    hits = await search(client, key, kb, "how do I get on the VPN?")
    assert hits[0]["document_id"] == doc["id"]
    assert hits[0]["vector_score"] > 0.3
    assert hits[0]["keyword_score"] is not None
    assert (await search(client, key, kb, "badge number", mode="keyword"))[0]["document_id"] == doc["id"]

    again = await upload_text(client, key, kb, "VPN guide (copy)", VPN)
    assert again["duplicate"]
    assert again["id"] == doc["id"]
    async with sessions() as session:
        chunks = await session.scalar(
            select(func.count()).select_from(KbChunk).where(KbChunk.tenant_id == tenant_id)
        )
    assert chunks == 1

    files = {"file": ("sample.docx", (FIXTURES / "rag" / "sample.docx").read_bytes())}
    multi = await client.post(f"/v1/knowledge-bases/{kb}/documents", files=files, headers=auth(key))
    assert multi.status_code == 202, multi.text
    assert (await wait_ready(client, key, kb, multi.json()["id"]))["status"] == "ready"
    assert (await search(client, key, kb, "receipts deadline"))[0]["document_id"] == multi.json()["id"]

    deleted = await client.delete(f"/v1/knowledge-bases/{kb}/documents/{doc['id']}", headers=auth(key))
    assert deleted.status_code == 204
    assert all(h["document_id"] != doc["id"] for h in await search(client, key, kb, "VPN badge"))
    async with sessions() as session:
        event = await session.scalar(
            select(AuditEvent)
            .where(AuditEvent.tenant_id == tenant_id, AuditEvent.action == "kb.document.delete")
            .order_by(AuditEvent.seq.desc())
        )
    assert event is not None
    assert event.data["chunks_deleted"] == 1


async def test_tenant_b_never_sees_tenant_a(
    client: httpx.AsyncClient, api_worker: None, make_key: MakeKey, tenant_id: str
) -> None:
    key_a, key_b = await make_key(tenant_id), await make_key(tenant_id + "-b")
    kb_a, kb_b = await make_kb(client, key_a), await make_kb(client, key_b)
    doc_a = await upload_text(client, key_a, kb_a, "A", VPN)
    doc_b = await upload_text(client, key_b, kb_b, "B", VPN + " Tenant B edition.")
    await wait_ready(client, key_a, kb_a, doc_a["id"])
    await wait_ready(client, key_b, kb_b, doc_b["id"])
    hits = await search(client, key_b, kb_b, "corporate VPN badge", top_k=20)
    assert {h["document_id"] for h in hits} == {doc_b["id"]}
    # Tenant A's knowledge base and document are simply not found for B.
    assert (
        await client.post(f"/v1/knowledge-bases/{kb_a}/search", json={"query": "VPN"}, headers=auth(key_b))
    ).status_code == 404
    assert (
        await client.get(f"/v1/knowledge-bases/{kb_a}/documents/{doc_a['id']}", headers=auth(key_b))
    ).status_code == 404


async def test_answer_cites_or_says_not_found(
    client: httpx.AsyncClient, api_worker: None, make_key: MakeKey, tenant_id: str
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(client, key)
    doc = await upload_text(client, key, kb, "VPN guide", VPN)
    await wait_ready(client, key, kb, doc["id"])
    model = "sim-openai/gpt-4o-mini"
    found = await client.post(
        f"/v1/knowledge-bases/{kb}/answer",
        json={"model": model, "query": "How do I connect to the VPN?"},
        headers=auth(key),
    )
    assert found.status_code == 200, found.text
    assert found.json()["found"]
    assert found.json()["citations"][0]["document_id"] == doc["id"]
    missing = await client.post(
        f"/v1/knowledge-bases/{kb}/answer",
        json={"model": model, "query": "What is the boiling point of tungsten?"},
        headers=auth(key),
    )
    assert missing.json() == {
        "answer": "Not found in the knowledge base.",
        "found": False,
        "model": None,
        "citations": [],
    }


async def test_malformed_and_oversized_uploads_are_problems(
    client: httpx.AsyncClient, make_key: MakeKey, tenant_id: str
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(client, key)
    bad = await client.post(
        f"/v1/knowledge-bases/{kb}/documents", files={"file": ("x.pdf", b"not a pdf")}, headers=auth(key)
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    png = await client.post(
        f"/v1/knowledge-bases/{kb}/documents",
        files={"file": ("x.png", b"\x89PNG", "image/png")},
        headers=auth(key),
    )
    assert png.status_code == 422
    listed = await client.get(f"/v1/knowledge-bases/{kb}/documents", headers=auth(key))
    assert listed.json()["data"] == []
