"""Ingestion activities: parse, PII hook, chunk, embed a batch, finalize. Thin adapters over core.rag.

Every write is idempotent: parsed text under ``{workflow_id}:text``, chunks under
``UNIQUE(document_id, chunk_index)``, vectors only where none is stored yet, and the status flip
is a plain UPDATE. Malformed documents fail non-retryably (``UnsupportedDocument``).

A document erased while its ingestion runs (a connector sink replaced it, or it was deleted)
fails the activity non-retryably as ``DocumentDeleted``: retrying cannot bring it back, and the
workflow ends the run cleanly with the status ``deleted`` (see ``workflows/ingest``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.llm import heartbeating
from activities.runs import RunActivities, require_own_workflow
from core.db.rag_models import KbDocument
from core.errors import NexusError, NotFound
from core.payloads import PayloadStore
from core.providers.errors import ProviderError
from core.providers.registry import ProviderRegistry
from core.rag.chunk import chunk_text, embedding_text
from core.rag.contracts import (
    ChunkInput,
    ChunkResult,
    DocumentStatus,
    EmbedBatchInput,
    EmbedBatchResult,
    FinalizeInput,
    FinalizeResult,
    ParseInput,
    ParseResult,
    PiiHookInput,
    PiiHookResult,
)
from core.rag.embed import embedder_for
from core.rag.parse import UnsupportedDocument, parse
from core.rag.settings import RagSettings
from core.rag.store import RagRepository
from core.rag.uploads import get_bytes

DOCUMENT_DELETED = "DocumentDeleted"  # the ApplicationError type of an erased document
DELETED_STATUS = "deleted"  # IngestResult.status of a run whose document was erased meanwhile


def document_deleted() -> ApplicationError:
    """The terminal failure of an activity whose document no longer exists."""
    return ApplicationError("the document no longer exists", type=DOCUMENT_DELETED, non_retryable=True)


async def require_document(repo: RagRepository, tenant_id: str, document_id: str) -> KbDocument:
    """The document, or the non-retryable ``DocumentDeleted`` failure when it was erased."""
    try:
        return await repo.document_by_id(tenant_id, document_id)
    except NotFound:
        raise document_deleted() from None


async def embed_and_store(
    sessions: async_sessionmaker[AsyncSession],
    registry: ProviderRegistry | None,
    tenant_id: str,
    model: str,
    todo: list[tuple[int, str]],
) -> int:
    """Embed ``(chunk id, text)`` pairs with ``model`` and store the vectors; returns the count.

    Provider errors become typed ``EmbeddingFailed`` application errors (retryable as the
    provider says, with its Retry-After); other domain errors fail at once.
    """
    if not todo:
        return 0
    try:
        async with heartbeating():
            vectors = await embedder_for(model, registry).embed([t for _, t in todo])
    except ProviderError as exc:
        delay = timedelta(seconds=exc.retry_after_s) if exc.retry_after_s else None
        raise ApplicationError(
            exc.message[:300],
            type="EmbeddingFailed",
            non_retryable=not exc.retryable,
            next_retry_delay=delay,
        ) from None
    except NexusError as exc:
        raise ApplicationError(exc.detail, type="EmbeddingFailed", non_retryable=True) from None
    async with sessions() as session, session.begin():
        await RagRepository.from_session(session).set_embeddings(
            tenant_id, model, {cid: vec for (cid, _), vec in zip(todo, vectors, strict=True)}
        )
    return len(todo)


class RagActivities(RunActivities):
    """Activities of ``IngestDocument``, bound to the worker's clients."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        registry: ProviderRegistry | None,
        settings: RagSettings | None = None,
    ) -> None:
        super().__init__(sessions, redis)
        self._registry = registry
        self._settings = settings or RagSettings()

    @activity.defn(name="rag_parse")
    async def rag_parse(self, inp: ParseInput) -> ParseResult:
        """Extract the text of the upload (in a thread) and store it; marks the document indexing."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with heartbeating():  # a large file parses for minutes in its thread
            async with self._sessions() as session:
                repo = RagRepository.from_session(session)
                await require_document(repo, inp.tenant_id, inp.document_id)
                data = await get_bytes(session, inp.tenant_id, inp.source)
            try:
                doc = await asyncio.to_thread(parse, data, inp.content_type, self._settings.max_text_chars)
            except UnsupportedDocument as exc:
                raise ApplicationError(exc.detail, type="UnsupportedDocument", non_retryable=True) from None
            async with self._sessions() as session, session.begin():
                ref = await PayloadStore(max_bytes=8 * self._settings.max_text_chars).put(
                    session, inp.tenant_id, doc.text, idempotency_key=f"{inp.workflow_id}:text"
                )
                repo = RagRepository.from_session(session)
                await require_document(repo, inp.tenant_id, inp.document_id)
                await repo.set_status(inp.tenant_id, inp.document_id, DocumentStatus.indexing)
            return ParseResult(text=ref, structure=doc.structure, chars=len(doc.text))

    @activity.defn(name="rag_pii_hook")
    async def rag_pii_hook(self, inp: PiiHookInput) -> PiiHookResult:
        """Governance hook before anything is indexed: a no-op until PII redaction lands."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with heartbeating():  # the workflow gives this step a heartbeat timeout
            return PiiHookResult(text=inp.text, redactions=0)

    @activity.defn(name="rag_chunk")
    async def rag_chunk(self, inp: ChunkInput) -> ChunkResult:
        """Split the text and store every chunk (without vectors); a retry stores nothing twice."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with heartbeating():
            async with self._sessions() as session:
                text = await PayloadStore().get(session, inp.tenant_id, inp.text)
            chunks = await asyncio.to_thread(
                chunk_text, text, inp.structure, inp.chunk_tokens, inp.chunk_overlap
            )
            async with self._sessions() as session, session.begin():
                repo = RagRepository.from_session(session)
                doc = await require_document(repo, inp.tenant_id, inp.document_id)
                await repo.insert_chunks(inp.tenant_id, doc.kb_id, inp.document_id, chunks)
            return ChunkResult(chunk_count=len(chunks))

    @activity.defn(name="rag_embed_batch")
    async def rag_embed_batch(self, inp: EmbedBatchInput) -> EmbedBatchResult:
        """Embed the batch's chunks that still lack a vector and store the vectors."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self._sessions() as session:
            repo = RagRepository.from_session(session)
            doc = await require_document(repo, inp.tenant_id, inp.document_id)
            kb = await repo.get_kb(inp.tenant_id, doc.kb_id)
            # The model the knowledge base is on (or moving to) now, not the one at upload time:
            # a switch that completed meanwhile must not leave this document on the old model.
            model = kb.pending_embedding_model or kb.embedding_model
            pending = await repo.chunks_to_embed(inp.tenant_id, inp.document_id, inp.first, inp.last, model)
            todo = [(c.id, embedding_text(c.text, c.metadata_)) for c in pending]
        return EmbedBatchResult(
            embedded=await embed_and_store(self._sessions, self._registry, inp.tenant_id, model, todo)
        )

    @activity.defn(name="rag_finalize")
    async def rag_finalize(self, inp: FinalizeInput) -> FinalizeResult:
        """Flip the document to ``ready`` once every chunk has a vector of the knowledge base's
        model (current or pending), or to ``failed`` (its chunks removed) when ``error`` is given.
        The last write: search sees it only now. Chunks embedded with a model the knowledge base
        has since left are reported as ``stale`` and the document stays ``indexing``."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self._sessions() as session, session.begin():
            repo = RagRepository.from_session(session)
            if inp.error is not None:
                await repo.delete_chunks(inp.tenant_id, inp.document_id)
                await repo.set_status(inp.tenant_id, inp.document_id, DocumentStatus.failed, error=inp.error)
                return FinalizeResult(status=DocumentStatus.failed, chunk_count=0)
            await require_document(repo, inp.tenant_id, inp.document_id)
            total, embedded = await repo.chunk_counts(inp.tenant_id, inp.document_id)
            if total != inp.chunk_count or embedded != total:
                raise ApplicationError(f"{embedded}/{total} chunks embedded, expected {inp.chunk_count}")
            # Under the knowledge base's row lock, as ``rag_reembed_switch`` takes it: either the
            # switch sees this document's chunks (and re-embeds them), or this sees the switch.
            doc = await repo.document_by_id(inp.tenant_id, inp.document_id)
            kb = await repo.lock_kb(inp.tenant_id, doc.kb_id)
            models = {m for m in (kb.embedding_model, kb.pending_embedding_model) if m}
            stale = await repo.count_stale(inp.tenant_id, inp.document_id, models)
            if stale:
                return FinalizeResult(status=DocumentStatus.indexing, chunk_count=total, stale=stale)
            await repo.set_status(inp.tenant_id, inp.document_id, DocumentStatus.ready, chunk_count=total)
        return FinalizeResult(status=DocumentStatus.ready, chunk_count=total)
