"""The ``ReembedKnowledgeBase`` workflow: re-embed every chunk with a new model, then switch.

While it runs the knowledge base keeps its ``embedding_model`` and has ``pending_embedding_model``
set; documents stay ready and search embeds the query with both models, each compared only with
the chunks carrying its vectors. Batches select chunks still on another model, so a resumed or
retried run never re-embeds a chunk twice; the last activity flips the model once none is left.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.rag import RagActivities
    from activities.rag_reembed import ReembedActivities
    from core.contracts import EventType, FinishRunInput, PublishEventInput, RunStatus
    from core.rag.contracts import (
        REEMBED_RUN_KIND,
        ReembedBatchInput,
        ReembedInput,
        ReembedResult,
        ReembedSwitchInput,
    )

RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=["BadInput"],
)
STEP_TIMEOUT = timedelta(minutes=5)
EMBED_HEARTBEAT = timedelta(seconds=10)
WRITE_TIMEOUT = timedelta(seconds=30)
BATCHES_PER_RUN = 200  # then continue-as-new, so the history stays small on large knowledge bases
MAX_SWITCH_ROUNDS = 20


@workflow.defn(name="ReembedKnowledgeBase")
class ReembedKnowledgeBaseWorkflow:
    """Events: ``run.started``, ``reembed.batch`` per batch, then ``run.completed`` / ``run.failed``."""

    def __init__(self) -> None:
        self._seq = 0

    @workflow.run
    async def run(self, inp: ReembedInput) -> ReembedResult:
        wid = workflow.info().workflow_id
        done = inp.done
        self._seq = inp.seq
        try:
            if inp.seq == 0:
                await self._event(inp, EventType.started, {"target_model": inp.target_model})
            for _ in range(MAX_SWITCH_ROUNDS):
                batches = 0
                while True:
                    if batches >= BATCHES_PER_RUN:
                        workflow.continue_as_new(inp.model_copy(update={"done": done, "seq": self._seq}))
                    out = await workflow.execute_activity_method(
                        ReembedActivities.rag_reembed_batch,
                        ReembedBatchInput(
                            tenant_id=inp.tenant_id,
                            workflow_id=wid,
                            kb_id=inp.kb_id,
                            target_model=inp.target_model,
                            batch=inp.batch,
                        ),
                        start_to_close_timeout=STEP_TIMEOUT,
                        heartbeat_timeout=EMBED_HEARTBEAT,
                        retry_policy=RETRY,
                    )
                    if out.embedded == 0:
                        break
                    batches += 1
                    done += out.embedded
                    await self._event(inp, "reembed.batch", {"done": done})
                switch = await workflow.execute_activity_method(
                    ReembedActivities.rag_reembed_switch,
                    ReembedSwitchInput(
                        tenant_id=inp.tenant_id,
                        workflow_id=wid,
                        kb_id=inp.kb_id,
                        target_model=inp.target_model,
                    ),
                    start_to_close_timeout=WRITE_TIMEOUT,
                    retry_policy=RETRY,
                )
                if switch.switched:
                    break
            else:
                raise ApplicationError("chunks kept arriving on the old model", type="ReembedFailed")
            result = ReembedResult(kb_id=inp.kb_id, embedding_model=inp.target_model, reembedded=done)
            await self._finish(
                inp, RunStatus.completed, EventType.completed, result.model_dump(), result.model_dump()
            )
            return result
        except BaseException as exc:
            if is_cancelled_exception(exc) or not isinstance(exc, ActivityError | ApplicationError):
                raise
            reason = str(exc.cause.message if isinstance(exc.cause, ApplicationError) else exc)[:300]
            await self._finish(inp, RunStatus.failed, EventType.failed, {"error": reason}, {}, error=reason)
            raise ApplicationError(
                f"re-embedding failed: {reason}", type="ReembedFailed", non_retryable=True
            ) from exc

    async def _event(self, inp: ReembedInput, type: str, data: dict[str, Any]) -> None:
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
        inp: ReembedInput,
        status: RunStatus,
        event: EventType,
        data: dict[str, Any],
        result: dict[str, Any],
        error: str | None = None,
    ) -> None:
        self._seq += 1
        wid = workflow.info().workflow_id
        await workflow.execute_activity_method(
            RagActivities.finish_run,
            FinishRunInput(
                tenant_id=inp.tenant_id,
                workflow_id=wid,
                kind=REEMBED_RUN_KIND,
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
