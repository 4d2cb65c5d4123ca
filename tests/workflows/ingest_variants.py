"""A deliberately non-deterministic change of the IngestDocument workflow (must fail replay).

It drops the PII hook and chunks the parsed text directly: in a recorded history the command
after the ``ingest.parsed`` event is the ``rag_pii_hook`` activity, so replay meets ``rag_chunk``
instead.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.rag import RagActivities
    from core.contracts import EventType, PublishEventInput
    from core.rag.contracts import ChunkInput, DocumentStatus, IngestInput, IngestResult, ParseInput

STEP = timedelta(minutes=5)


@workflow.defn(name="IngestDocument")
class NoPiiHookIngestWorkflow:
    """IngestDocument without the governance hook: a breaking change to the command sequence."""

    @workflow.run
    async def run(self, inp: IngestInput) -> IngestResult:
        wid = workflow.info().workflow_id
        await self._event(inp, 1, EventType.started, {"document_id": inp.document_id})
        parsed = await workflow.execute_activity_method(
            RagActivities.rag_parse,
            ParseInput(
                tenant_id=inp.tenant_id,
                workflow_id=wid,
                document_id=inp.document_id,
                source=inp.source,
                content_type=inp.content_type,
            ),
            start_to_close_timeout=STEP,
        )
        await self._event(inp, 2, "ingest.parsed", {"chars": parsed.chars, "structure": parsed.structure})
        chunked = await workflow.execute_activity_method(
            RagActivities.rag_chunk,
            ChunkInput(
                tenant_id=inp.tenant_id,
                workflow_id=wid,
                document_id=inp.document_id,
                text=parsed.text,
                structure=parsed.structure,
                chunk_tokens=inp.chunk_tokens,
                chunk_overlap=inp.chunk_overlap,
            ),
            start_to_close_timeout=STEP,
        )
        return IngestResult(
            document_id=inp.document_id, status=DocumentStatus.indexing, chunk_count=chunked.chunk_count
        )

    async def _event(self, inp: IngestInput, seq: int, type: str, data: dict[str, object]) -> None:
        await workflow.execute_activity_method(
            RagActivities.publish_run_event,
            PublishEventInput(
                tenant_id=inp.tenant_id,
                workflow_id=workflow.info().workflow_id,
                seq=seq,
                type=type,
                data=data,
            ),
            start_to_close_timeout=timedelta(seconds=30),
        )
