"""Crash test: kill -9 the worker while ``IngestDocument`` embeds; a new worker finishes it, once.

A long document (about 210 chunks, i.e. seven embedding batches of 32 with the local MiniLM,
roughly two seconds per batch on two cores) is uploaded through the API. The worker, a real subprocess
(``python -m workers.main``) polling the API's task queue, is killed with SIGKILL as soon as the
first batch's vectors are stored, i.e. while a later batch is being embedded. A second worker
resumes the run. Afterwards the document is ``ready`` and searchable, has exactly one set of
chunks (one row per ``chunk_index``, the rows stored before the crash kept as they were), every
chunk has a vector, and a search running during the whole ingestion never returned the document
before it was ready.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.db.rag_models import KbChunk, KbDocument
from tests.api.test_knowledge_bases_api import make_kb, search, upload_text
from tests.conftest import auth
from tests.e2e.test_orchestration_crash import start_worker, wait_for

pytestmark = pytest.mark.slow
MakeKey = Callable[..., Awaitable[str]]
BATCH = 32  # RagSettings.embed_batch
MARKER = "The zebrafish quarantine protocol is QX-8812."

WORDS = (
    "audit budget cluster deadline escalation forecast gateway handover invoice journal kernel "
    "ledger milestone network onboarding pipeline quota release schedule ticket upgrade vendor "
    "warehouse archive backlog capacity dashboard export firmware governance hardware inventory "
    "license migration notebook outage payroll quarterly rollout storage telemetry uptime"
).split()


def long_document(paragraphs: int = 130) -> str:
    """A deterministic text (130 paragraphs make about 210 chunks of 200 tokens) with one marker."""
    rng = random.Random(8812)
    out = [MARKER]
    for i in range(paragraphs):
        sentences = [
            f"Item {i}.{j} covers the {' '.join(rng.choices(WORDS, k=12))} review."
            for j in range(rng.randint(8, 10))
        ]
        out.append(" ".join(sentences))
    return "\n\n".join(out)


async def chunk_state(sessions: async_sessionmaker[AsyncSession], doc_id: str) -> tuple[int, int]:
    """(chunks stored, chunks with a vector) of the document."""
    async with sessions() as session:
        total, embedded = (
            await session.execute(
                select(func.count(), func.count(KbChunk.embedding)).where(
                    KbChunk.document_id == uuid.UUID(doc_id)
                )
            )
        ).one()
    return int(total), int(embedded)


async def embedded_ids(sessions: async_sessionmaker[AsyncSession], doc_id: str) -> dict[int, int]:
    """``chunk_index → row id`` of the document's chunks that have a vector."""
    async with sessions() as session:
        rows = await session.execute(
            select(KbChunk.chunk_index, KbChunk.id).where(
                KbChunk.document_id == uuid.UUID(doc_id), KbChunk.embedding.is_not(None)
            )
        )
    return {int(index): int(cid) for index, cid in rows.all()}


async def status_of(sessions: async_sessionmaker[AsyncSession], doc_id: str) -> str:
    async with sessions() as session:
        return str(await session.scalar(select(KbDocument.status).where(KbDocument.id == uuid.UUID(doc_id))))


async def test_kill_worker_mid_embedding_indexes_document_once(
    client: httpx.AsyncClient,
    make_key: MakeKey,
    tenant_id: str,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(client, key, "crash")
    queue = settings.temporal.task_queue  # the queue the API starts ingestions on
    log = tmp_path / "worker.log"
    first = start_worker(settings, queue, log)
    second: subprocess.Popen[bytes] | None = None
    early_hits: list[str] = []
    stop = asyncio.Event()
    doc_id = ""

    async def watch_search() -> None:
        """Search for the marker until the document is ready; a hit before that is a leak."""
        while not stop.is_set():
            if doc_id and await status_of(sessions, doc_id) == "ready":
                return
            for mode in ("keyword", "hybrid"):
                hits = await search(client, key, kb, "zebrafish quarantine QX-8812", mode=mode, top_k=5)
                if (
                    any(h["document_id"] == doc_id for h in hits)
                    and await status_of(sessions, doc_id) != "ready"
                ):
                    early_hits.append(mode)
            await asyncio.sleep(0.2)

    watcher: asyncio.Task[None] | None = None
    try:
        doc = await upload_text(client, key, kb, "long handbook", long_document())
        doc_id = doc["id"]
        watcher = asyncio.create_task(watch_search())

        async def first_batch_stored() -> bool:
            total, embedded = await chunk_state(sessions, doc_id)
            return total > 0 and embedded >= BATCH

        await wait_for(first_batch_stored, 180, f"the first embedded batch (worker log: {log})")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        total, embedded = await chunk_state(sessions, doc_id)
        assert total >= 4 * BATCH, f"document too short to crash mid-embedding: {total} chunks"
        assert 0 < embedded < total, f"the kill missed the embedding phase: {embedded}/{total}"
        assert await status_of(sessions, doc_id) == "indexing"
        before = await embedded_ids(sessions, doc_id)
        print(f"\nkilled the worker with {embedded}/{total} chunks embedded")  # noqa: T201

        second = start_worker(settings, queue, log)
        ready = await wait_ready_long(client, key, kb, doc_id)
    finally:
        stop.set()
        if watcher is not None:
            await watcher
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)

    assert ready["status"] == "ready", ready
    assert ready["chunk_count"] == total
    assert early_hits == [], "the document was searchable before it was ready"

    async with sessions() as session:
        rows = (
            await session.execute(
                select(KbChunk.chunk_index, KbChunk.id, KbChunk.embedding.is_not(None)).where(
                    KbChunk.document_id == uuid.UUID(doc_id)
                )
            )
        ).all()
    indexes = sorted(int(r[0]) for r in rows)
    assert indexes == list(range(total)), "missing or duplicate chunks"
    assert all(r[2] for r in rows), "a chunk has no vector"
    after = {int(r[0]): int(r[1]) for r in rows}
    assert {i: after[i] for i in before} == before, "chunks stored before the crash were rewritten"

    hits = await search(client, key, kb, "zebrafish quarantine QX-8812", mode="keyword", top_k=1)
    assert hits
    assert hits[0]["document_id"] == doc_id
    assert "QX-8812" in hits[0]["text"]
    hybrid = await search(client, key, kb, "Which protocol applies to zebrafish quarantine?")
    assert hybrid[0]["document_id"] == doc_id


async def wait_ready_long(client: httpx.AsyncClient, key: str, kb: str, doc: str) -> dict[str, object]:
    """Like ``wait_ready`` with room for the heartbeat timeout and the remaining batches."""
    for _ in range(180):
        out = await wait_ready_once(client, key, kb, doc)
        if out["status"] in ("ready", "failed"):
            return out
        await asyncio.sleep(1)
    raise AssertionError(f"document {doc} not indexed after the restart")


async def wait_ready_once(client: httpx.AsyncClient, key: str, kb: str, doc: str) -> dict[str, object]:
    resp = await client.get(f"/v1/knowledge-bases/{kb}/documents/{doc}", headers=auth(key))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())
