"""An ingestion that ends after its knowledge base switched embedding model must not leave the
document on the old model's vectors: ``rag_finalize`` (under the knowledge base's row lock)
refuses chunks of a model the knowledge base left, and the workflow re-runs its batches, which
embed with the knowledge base's current model."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.rag import RagActivities
from core.config import Settings
from core.contracts import FinishRunInput, PublishEventInput
from core.db.rag_models import KbChunk, KbDocument, KnowledgeBase
from core.orchestration.contracts import PayloadRef
from core.rag.chunk import Chunk
from core.rag.contracts import (
    ChunkInput,
    ChunkResult,
    DocumentStatus,
    EmbedBatchInput,
    EmbedBatchResult,
    FinalizeInput,
    FinalizeResult,
    IngestInput,
    ParseInput,
    ParseResult,
    PiiHookInput,
    PiiHookResult,
)
from core.rag.settings import LOCAL_MODEL
from core.rag.store import RagRepository
from workers.main import make_http_client, make_registry
from workflows.ingest import IngestDocumentWorkflow

TARGET = "sim-openai/text-embedding-3-small"
TEXTS = ["Expense claims are filed within thirty days.", "Receipts above 25 euros.", "Mileage rates."]


@pytest_asyncio.fixture
async def rag(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[RagActivities]:
    http = make_http_client(settings)
    redis = Redis.from_url(settings.redis.url)
    yield RagActivities(sessions, redis, make_registry(settings, http))
    await redis.aclose()
    await http.aclose()


async def _document(
    sessions: async_sessionmaker[AsyncSession], tenant: str, model: str, pending: str | None
) -> tuple[uuid.UUID, str, str]:
    """A knowledge base on ``model`` (switching to ``pending``) with one indexing document of
    three chunks without vectors; (kb id, document id, workflow id)."""
    wid = f"ingest:{tenant}:{uuid.uuid4().hex}"
    async with sessions() as session, session.begin():
        repo = RagRepository.from_session(session)
        kb = await repo.create_kb(
            tenant,
            name=f"stale-{uuid.uuid4().hex[:8]}",
            embedding_model=model,
            pending_embedding_model=pending,
            chunk_tokens=200,
            chunk_overlap=30,
            created_by="test",
        )
        doc, _ = await repo.insert_document(
            tenant,
            kb_id=kb.id,
            title="Expenses",
            content_type="text/plain",
            sha256=hashlib.sha256(wid.encode()).hexdigest(),
            size=100,
            status=DocumentStatus.indexing,
            source_payload_id=uuid.uuid4(),
            workflow_id=wid,
            created_by="test",
        )
        chunks = [Chunk(index=i, text=t, start=0, end=len(t), token_count=8) for i, t in enumerate(TEXTS)]
        await repo.insert_chunks(tenant, kb.id, str(doc.id), chunks)
    return kb.id, str(doc.id), wid


def _env(wid: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=wid)
    return env


async def _models(sessions: async_sessionmaker[AsyncSession], doc_id: str) -> list[str | None]:
    async with sessions() as session:
        rows = await session.scalars(
            select(KbChunk.embedding_model).where(KbChunk.document_id == uuid.UUID(doc_id))
        )
        return list(rows.all())


async def _status(sessions: async_sessionmaker[AsyncSession], doc_id: str) -> str:
    async with sessions() as session:
        status = await session.scalar(select(KbDocument.status).where(KbDocument.id == uuid.UUID(doc_id)))
    assert status is not None
    return status


async def test_finalize_after_a_completed_switch_reembeds_instead_of_going_ready(
    rag: RagActivities, sessions: async_sessionmaker[AsyncSession], tenant: str
) -> None:
    kb_id, doc_id, wid = await _document(sessions, tenant, LOCAL_MODEL, None)
    env = _env(wid)
    batch = EmbedBatchInput(
        tenant_id=tenant, workflow_id=wid, document_id=doc_id, embedding_model=LOCAL_MODEL, first=0, last=3
    )
    assert (await env.run(rag.rag_embed_batch, batch)).embedded == 3
    assert await _models(sessions, doc_id) == [LOCAL_MODEL] * 3

    # ReembedKnowledgeBase switched the knowledge base while this document was still indexing.
    async with sessions() as session, session.begin():
        await session.execute(
            update(KnowledgeBase).where(KnowledgeBase.id == kb_id).values(embedding_model=TARGET)
        )
    fin = FinalizeInput(tenant_id=tenant, workflow_id=wid, document_id=doc_id, chunk_count=3)
    refused = await env.run(rag.rag_finalize, fin)
    assert (refused.status, refused.stale) == (DocumentStatus.indexing, 3)
    assert await _status(sessions, doc_id) == DocumentStatus.indexing  # not searchable on old vectors

    # The same batch (same input, upload-time model) now embeds with the knowledge base's model.
    assert (await env.run(rag.rag_embed_batch, batch)).embedded == 3
    assert await _models(sessions, doc_id) == [TARGET] * 3
    assert (await env.run(rag.rag_embed_batch, batch)).embedded == 0  # idempotent
    done = await env.run(rag.rag_finalize, fin)
    assert (done.status, done.stale) == (DocumentStatus.ready, 0)
    assert await _status(sessions, doc_id) == DocumentStatus.ready


async def test_during_a_switch_batches_embed_with_the_pending_model(
    rag: RagActivities, sessions: async_sessionmaker[AsyncSession], tenant: str
) -> None:
    _, doc_id, wid = await _document(sessions, tenant, LOCAL_MODEL, TARGET)
    env = _env(wid)
    batch = EmbedBatchInput(
        tenant_id=tenant, workflow_id=wid, document_id=doc_id, embedding_model=LOCAL_MODEL, first=0, last=3
    )
    assert (await env.run(rag.rag_embed_batch, batch)).embedded == 3
    assert await _models(sessions, doc_id) == [TARGET] * 3
    fin = FinalizeInput(tenant_id=tenant, workflow_id=wid, document_id=doc_id, chunk_count=3)
    assert (await env.run(rag.rag_finalize, fin)).status == DocumentStatus.ready


class FakeIngestActivities:
    """The ingestion activities by name; ``rag_finalize`` reports stale vectors once."""

    def __init__(self) -> None:
        self.embed_calls: list[tuple[int, int]] = []
        self.finalize_calls = 0
        self.events: list[str] = []
        ref = PayloadRef(id=str(uuid.uuid4()), sha256="0" * 64, size=1)
        self.ref = ref

    @activity.defn(name="publish_run_event")
    async def publish_run_event(self, inp: PublishEventInput) -> None:
        self.events.append(inp.type)

    @activity.defn(name="finish_run")
    async def finish_run(self, inp: FinishRunInput) -> None:
        self.events.append(inp.terminal_event.type if inp.terminal_event else "")

    @activity.defn(name="rag_parse")
    async def rag_parse(self, inp: ParseInput) -> ParseResult:
        return ParseResult(text=self.ref, structure="text", chars=10)

    @activity.defn(name="rag_pii_hook")
    async def rag_pii_hook(self, inp: PiiHookInput) -> PiiHookResult:
        return PiiHookResult(text=inp.text)

    @activity.defn(name="rag_chunk")
    async def rag_chunk(self, inp: ChunkInput) -> ChunkResult:
        return ChunkResult(chunk_count=3)

    @activity.defn(name="rag_embed_batch")
    async def rag_embed_batch(self, inp: EmbedBatchInput) -> EmbedBatchResult:
        self.embed_calls.append((inp.first, inp.last))
        return EmbedBatchResult(embedded=inp.last - inp.first)

    @activity.defn(name="rag_finalize")
    async def rag_finalize(self, inp: FinalizeInput) -> FinalizeResult:
        self.finalize_calls += 1
        if self.finalize_calls == 1:
            return FinalizeResult(status=DocumentStatus.indexing, chunk_count=3, stale=3)
        return FinalizeResult(status=DocumentStatus.ready, chunk_count=3)


async def test_workflow_reruns_the_batches_when_finalize_finds_stale_vectors(
    temporal_client: Client, task_queue: str
) -> None:
    fake = FakeIngestActivities()
    acts = [getattr(fake, n) for n in ("publish_run_event", "finish_run", "rag_parse", "rag_pii_hook")]
    acts += [fake.rag_chunk, fake.rag_embed_batch, fake.rag_finalize]
    async with Worker(
        temporal_client, task_queue=task_queue, workflows=[IngestDocumentWorkflow], activities=acts
    ):
        result = await temporal_client.execute_workflow(
            IngestDocumentWorkflow.run,
            IngestInput(
                tenant_id="t-stale",
                kb_id=str(uuid.uuid4()),
                document_id=str(uuid.uuid4()),
                source=fake.ref,
                content_type="text/plain",
                embedding_model=LOCAL_MODEL,
                embed_batch=2,
            ),
            id=f"ingest:t-stale:{uuid.uuid4().hex}",
            task_queue=task_queue,
        )
    assert result.status == DocumentStatus.ready
    assert fake.embed_calls == [(0, 2), (2, 3), (0, 2), (2, 3)]
    assert fake.finalize_calls == 2
    assert "ingest.model_changed" in fake.events
    assert fake.events[-1] == "run.completed"
