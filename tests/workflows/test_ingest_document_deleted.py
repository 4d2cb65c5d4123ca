"""An ingestion whose document is erased while it runs (a connector sink replaced the document,
or a user deleted it) ends cleanly: its activities fail at once, non-retryably, as
``DocumentDeleted``, and the workflow completes with the status ``deleted`` instead of failing
after its retries."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.rag import DELETED_STATUS, DOCUMENT_DELETED, RagActivities, document_deleted
from core.config import Settings
from core.contracts import FinishRunInput, PublishEventInput, RunStatus
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
from core.rag.uploads import put_bytes
from workers.main import make_http_client, make_registry
from workflows.ingest import DOCUMENT_DELETED_PATCH, IngestDocumentWorkflow


@pytest_asyncio.fixture
async def rag(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[RagActivities]:
    http = make_http_client(settings)
    redis = Redis.from_url(settings.redis.url)
    yield RagActivities(sessions, redis, make_registry(settings, http))
    await redis.aclose()
    await http.aclose()


async def test_activities_of_an_erased_document_fail_once_as_deleted(
    rag: RagActivities, sessions: async_sessionmaker[AsyncSession], tenant: str
) -> None:
    wid = f"ingest:{tenant}:{uuid.uuid4().hex}"
    text = b"Expense claims are filed within thirty days."
    async with sessions() as session, session.begin():
        repo = RagRepository.from_session(session)
        kb = await repo.create_kb(
            tenant,
            name=f"erased-{uuid.uuid4().hex[:8]}",
            embedding_model=LOCAL_MODEL,
            chunk_tokens=200,
            chunk_overlap=30,
            created_by="test",
        )
        source = await put_bytes(session, tenant, text, "text/plain", idempotency_key=wid)
        doc, _ = await repo.insert_document(
            tenant,
            kb_id=kb.id,
            title="Expenses",
            content_type="text/plain",
            sha256=hashlib.sha256(text).hexdigest(),
            size=len(text),
            status=DocumentStatus.indexing,
            source_payload_id=uuid.UUID(source.id),
            workflow_id=wid,
            created_by="test",
        )
        await repo.insert_chunks(
            tenant, kb.id, str(doc.id), [Chunk(index=0, text="x", start=0, end=1, token_count=1)]
        )
    doc_id = str(doc.id)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=wid)
    parse = ParseInput(
        tenant_id=tenant, workflow_id=wid, document_id=doc_id, source=source, content_type="text/plain"
    )
    assert (await env.run(rag.rag_parse, parse)).chars == len(text)  # the document still exists

    async with sessions() as session, session.begin():  # erased, as the knowledge-base sink does
        repo = RagRepository.from_session(session)
        await repo.delete_document(await repo.document_by_id(tenant, doc_id))

    calls = [
        (rag.rag_parse, parse),
        (
            rag.rag_chunk,
            ChunkInput(
                tenant_id=tenant,
                workflow_id=wid,
                document_id=doc_id,
                text=source,
                structure="text",
                chunk_tokens=200,
                chunk_overlap=30,
            ),
        ),
        (
            rag.rag_embed_batch,
            EmbedBatchInput(
                tenant_id=tenant,
                workflow_id=wid,
                document_id=doc_id,
                embedding_model=LOCAL_MODEL,
                first=0,
                last=1,
            ),
        ),
        (
            rag.rag_finalize,
            FinalizeInput(tenant_id=tenant, workflow_id=wid, document_id=doc_id, chunk_count=1),
        ),
    ]
    for fn, inp in calls:
        with pytest.raises(ApplicationError) as raised:
            await env.run(fn, inp)
        assert raised.value.type == DOCUMENT_DELETED, fn
        assert raised.value.non_retryable, fn


class ErasedMidwayActivities:
    """The ingestion activities by name; the document is erased before its first batch."""

    def __init__(self) -> None:
        self.embed_attempts = 0
        self.finalize_calls: list[FinalizeInput] = []
        self.finished: list[FinishRunInput] = []
        self.ref = PayloadRef(id=str(uuid.uuid4()), sha256="0" * 64, size=1)

    @activity.defn(name="publish_run_event")
    async def publish_run_event(self, inp: PublishEventInput) -> None:
        return None

    @activity.defn(name="finish_run")
    async def finish_run(self, inp: FinishRunInput) -> None:
        self.finished.append(inp)

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
        self.embed_attempts += 1
        raise document_deleted()

    @activity.defn(name="rag_finalize")
    async def rag_finalize(self, inp: FinalizeInput) -> FinalizeResult:
        self.finalize_calls.append(inp)
        return FinalizeResult(status=DocumentStatus.failed, chunk_count=0)


async def test_workflow_completes_as_deleted_when_its_document_is_erased(
    temporal_client: Client, task_queue: str
) -> None:
    fake = ErasedMidwayActivities()
    names = ("publish_run_event", "finish_run", "rag_parse", "rag_pii_hook", "rag_chunk")
    acts = [getattr(fake, n) for n in names] + [fake.rag_embed_batch, fake.rag_finalize]
    wid = f"ingest:t-erased:{uuid.uuid4().hex}"
    async with Worker(
        temporal_client, task_queue=task_queue, workflows=[IngestDocumentWorkflow], activities=acts
    ):
        handle = await temporal_client.start_workflow(
            IngestDocumentWorkflow.run,
            IngestInput(
                tenant_id="t-erased",
                kb_id=str(uuid.uuid4()),
                document_id=str(uuid.uuid4()),
                source=fake.ref,
                content_type="text/plain",
                embedding_model=LOCAL_MODEL,
                embed_batch=2,
            ),
            id=wid,
            task_queue=task_queue,
        )
        result = await handle.result()
    assert result.status == DELETED_STATUS
    assert fake.embed_attempts == 1  # terminal: not retried
    assert fake.finalize_calls == []  # nothing to mark failed
    assert [(f.status, f.terminal_event.type if f.terminal_event else None) for f in fake.finished] == [
        (RunStatus.completed, "run.completed")
    ]
    assert fake.finished[0].result["status"] == DELETED_STATUS
    history = await handle.fetch_history()
    markers = [
        e.marker_recorded_event_attributes
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
    ]
    recorded = [p.data for m in markers for payloads in m.details.values() for p in payloads.payloads]
    assert any(DOCUMENT_DELETED_PATCH.encode() in data for data in recorded)  # the patch marker
