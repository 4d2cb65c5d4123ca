"""The ``IngestDocument`` workflow: parse → PII hook → chunk → embed in batches → mark ready.

The document's bytes and text travel as payload references; chunks and vectors stay in
Postgres. The document becomes searchable only in the last activity (``rag_finalize``), so a
crash anywhere before leaves nothing half-indexed visible; a resumed run skips batches whose
vectors are already stored. A document erased meanwhile (its activities fail as
``DocumentDeleted``) ends the run as completed with the status ``deleted``, not as a failure.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.rag import DELETED_STATUS, DOCUMENT_DELETED, RagActivities
    from core.contracts import EventType, FinishRunInput, PublishEventInput, RunStatus
    from core.rag.contracts import (
        RUN_KIND,
        ChunkInput,
        DocumentStatus,
        EmbedBatchInput,
        FinalizeInput,
        IngestInput,
        IngestResult,
        ParseInput,
        PiiHookInput,
    )

RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=["BadInput", "UnsupportedDocument"],
)
STEP_TIMEOUT = timedelta(minutes=5)
# A step that can run for minutes heartbeats: a worker killed (kill -9) in the middle of it is
# noticed after this, not after STEP_TIMEOUT, so the document does not sit pending or indexing
# for five minutes behind an attempt that died with its worker.
STEP_HEARTBEAT = timedelta(seconds=10)
# Runs recorded before this never saw a finalize answer "indexing" (stale vectors).
STALE_VECTORS_PATCH = "ingest-stale-vectors"
# Runs recorded before this failed when their document was erased while they ran.
DOCUMENT_DELETED_PATCH = "ingest-document-deleted"
MAX_MODEL_ROUNDS = 3
WRITE_TIMEOUT = timedelta(seconds=30)


@workflow.defn(name="IngestDocument")
class IngestDocumentWorkflow:
    """Index one uploaded document of a knowledge base, exactly once.

    Events: ``run.started``, ``ingest.parsed``, ``ingest.chunked``, ``ingest.embedded`` per
    batch (again after ``ingest.model_changed`` when the knowledge base switched embedding model
    meanwhile), then ``run.completed`` (or ``run.failed`` / ``run.cancelled``).
    """

    def __init__(self) -> None:
        self._seq = 0

    @workflow.run
    async def run(self, inp: IngestInput) -> IngestResult:
        wid = workflow.info().workflow_id
        try:
            await self._event(inp, EventType.started, {"document_id": inp.document_id})
            parsed = await workflow.execute_activity_method(
                RagActivities.rag_parse,
                ParseInput(
                    tenant_id=inp.tenant_id,
                    workflow_id=wid,
                    document_id=inp.document_id,
                    source=inp.source,
                    content_type=inp.content_type,
                ),
                start_to_close_timeout=STEP_TIMEOUT,
                heartbeat_timeout=STEP_HEARTBEAT,
                retry_policy=RETRY,
            )
            await self._event(inp, "ingest.parsed", {"chars": parsed.chars, "structure": parsed.structure})
            hooked = await workflow.execute_activity_method(
                RagActivities.rag_pii_hook,
                PiiHookInput(
                    tenant_id=inp.tenant_id, workflow_id=wid, document_id=inp.document_id, text=parsed.text
                ),
                start_to_close_timeout=STEP_TIMEOUT,
                heartbeat_timeout=STEP_HEARTBEAT,
                retry_policy=RETRY,
            )
            chunked = await workflow.execute_activity_method(
                RagActivities.rag_chunk,
                ChunkInput(
                    tenant_id=inp.tenant_id,
                    workflow_id=wid,
                    document_id=inp.document_id,
                    text=hooked.text,
                    structure=parsed.structure,
                    chunk_tokens=inp.chunk_tokens,
                    chunk_overlap=inp.chunk_overlap,
                ),
                start_to_close_timeout=STEP_TIMEOUT,
                heartbeat_timeout=STEP_HEARTBEAT,
                retry_policy=RETRY,
            )
            total = chunked.chunk_count
            await self._event(inp, "ingest.chunked", {"chunks": total})
            await self._embed(inp, total)
            fin = FinalizeInput(
                tenant_id=inp.tenant_id, workflow_id=wid, document_id=inp.document_id, chunk_count=total
            )
            final = await self._finalize(inp, fin)
            # The knowledge base switched embedding model while this document was being embedded:
            # finalize left it indexing; the batches re-embed its chunks with the current model.
            rounds = 0
            while final == DocumentStatus.indexing and workflow.patched(STALE_VECTORS_PATCH):
                rounds += 1
                if rounds > MAX_MODEL_ROUNDS:
                    raise ApplicationError("the embedding model kept changing", type="IngestFailed")
                await self._event(inp, "ingest.model_changed", {"round": rounds})
                await self._embed(inp, total)
                final = await self._finalize(inp, fin)
            result = IngestResult(document_id=inp.document_id, status=final, chunk_count=total)
            await self._finish(
                inp, RunStatus.completed, EventType.completed, result.model_dump(), result.model_dump()
            )
            return result
        except BaseException as exc:
            if is_cancelled_exception(exc):
                # Cleanup runs after the cancellation was delivered; shield it from a second one.
                await asyncio.shield(self._fail(inp, RunStatus.cancelled, EventType.cancelled, "cancelled"))
                raise
            if not isinstance(exc, ActivityError | ApplicationError):
                raise  # a workflow bug: fail the task so a fixed worker can resume
            if _document_deleted(exc) and workflow.patched(DOCUMENT_DELETED_PATCH):
                return await self._deleted(inp)
            reason = _short_reason(exc)
            await self._fail(inp, RunStatus.failed, EventType.failed, reason)
            raise ApplicationError(
                f"ingestion failed: {reason}", type="IngestFailed", non_retryable=True
            ) from exc

    async def _deleted(self, inp: IngestInput) -> IngestResult:
        """The document was erased while this ran: nothing is left to index, the run ends cleanly."""
        result = IngestResult(document_id=inp.document_id, status=DELETED_STATUS, chunk_count=0)
        await self._finish(
            inp, RunStatus.completed, EventType.completed, result.model_dump(), result.model_dump()
        )
        return result

    async def _embed(self, inp: IngestInput, total: int) -> None:
        """Every batch of chunks (a batch embeds only chunks not yet on the knowledge base's model)."""
        for first in range(0, total, inp.embed_batch):
            last = min(first + inp.embed_batch, total)
            await workflow.execute_activity_method(
                RagActivities.rag_embed_batch,
                EmbedBatchInput(
                    tenant_id=inp.tenant_id,
                    workflow_id=workflow.info().workflow_id,
                    document_id=inp.document_id,
                    embedding_model=inp.embedding_model,
                    first=first,
                    last=last,
                ),
                start_to_close_timeout=STEP_TIMEOUT,
                heartbeat_timeout=STEP_HEARTBEAT,
                retry_policy=RETRY,
            )
            await self._event(inp, "ingest.embedded", {"done": last, "total": total})

    async def _finalize(self, inp: IngestInput, fin: FinalizeInput) -> str:
        done = await workflow.execute_activity_method(
            RagActivities.rag_finalize, fin, start_to_close_timeout=WRITE_TIMEOUT, retry_policy=RETRY
        )
        return done.status

    async def _fail(self, inp: IngestInput, status: RunStatus, event: EventType, reason: str) -> None:
        fin = FinalizeInput(
            tenant_id=inp.tenant_id,
            workflow_id=workflow.info().workflow_id,
            document_id=inp.document_id,
            error=reason,
        )
        await self._finalize(inp, fin)
        failed = IngestResult(document_id=inp.document_id, status=DocumentStatus.failed).model_dump()
        await self._finish(inp, status, event, {"error": reason}, failed, error=reason)

    async def _event(self, inp: IngestInput, type: str, data: dict[str, Any]) -> None:
        self._seq += 1
        await workflow.execute_activity_method(
            RagActivities.publish_run_event,
            PublishEventInput(
                tenant_id=inp.tenant_id,
                workflow_id=workflow.info().workflow_id,
                seq=self._seq,
                type=type,
                data=data,
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=RETRY,
        )

    async def _finish(
        self,
        inp: IngestInput,
        status: RunStatus,
        event: EventType,
        data: dict[str, Any],
        result: dict[str, Any],
        error: str | None = None,
    ) -> None:
        """Close the run row and store its terminal event atomically."""
        self._seq += 1
        wid = workflow.info().workflow_id
        await workflow.execute_activity_method(
            RagActivities.finish_run,
            FinishRunInput(
                tenant_id=inp.tenant_id,
                workflow_id=wid,
                kind=RUN_KIND,
                status=status,
                result=result,
                error=error,
                created_by=inp.created_by,
                run_id=workflow.info().run_id,
                terminal_event=PublishEventInput(
                    tenant_id=inp.tenant_id, workflow_id=wid, seq=self._seq, type=event, data=data
                ),
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=RETRY,
        )


def _document_deleted(exc: BaseException) -> bool:
    """Whether the failure is an activity's ``DocumentDeleted`` (the document was erased)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type == DOCUMENT_DELETED:
            return True
        cause = cause.__cause__
    return False


def _short_reason(exc: BaseException) -> str:
    """The innermost failure message, truncated (activities never put secrets in errors)."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    message = cause.message if isinstance(cause, ApplicationError) else str(cause)
    return (message or type(cause).__name__)[:300]
