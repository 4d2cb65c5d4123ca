"""The ``Pipeline`` workflow: run a pinned pipeline version's steps with a saga.

Deterministic: every template, expression, call and clock is an activity or a Temporal timer;
step outputs above the inline limit are claim-checks into the payload store, and each step is
given only the outputs its templates name, so the history stays small.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.pipeline_steps import PipelineActivities
    from activities.runs import RunActivities
    from core.contracts import FinishRunInput, PublishEventInput, RunStatus
    from core.pipelines.contracts import (
        RUN_KIND,
        LoadVersionInput,
        OutputsCall,
        PipelineEvent,
        PipelineInput,
        PipelineResult,
        PipelineStatus,
        StepContext,
        StepOutput,
    )
    from core.pipelines.definition import PipelineDefinition
    from core.pipelines.validate import sequence_ids, walk_steps
    from workflows.pipeline_options import WRITE_RETRY, WRITE_TIMEOUT, short_reason
    from workflows.pipeline_saga import Saga


@workflow.defn(name="Pipeline")
class PipelineWorkflow(Saga):
    """Run a pipeline version. Events: ``run.started``; per step ``step.started`` /
    ``step.completed`` / ``step.failed`` (``step.skipped`` for outputs reused by a retry); on
    failure or cancellation ``compensation.started`` / ``.completed`` / ``.failed`` in reverse
    order and ``run.compensation_failed`` when an undo failed for good; then ``run.completed``,
    ``run.failed`` or ``run.cancelled`` stored with the closed runs row (status ``completed``,
    ``failed``, ``compensated``, ``compensation_failed`` or ``cancelled``).
    """

    def __init__(self) -> None:
        self.seq = 0
        self.outputs: dict[str, StepOutput] = {}
        self.keys: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self.saga = []
        self.current: str | None = None

    @workflow.run
    async def run(self, inp: PipelineInput) -> PipelineResult:
        self.inp = inp
        try:
            await self.progress(
                PipelineEvent.started,
                pipeline=inp.pipeline_id,
                version=inp.version,
                resume_from=inp.options.resume_from,
            )
            defn = inp.definition or await self._load(inp)
            await self._steps(defn)
            self.current = None
            result = self._result(PipelineStatus.completed, outputs=await self._outputs(defn))
            await self._finish(result, PipelineEvent.completed)
            return result
        except BaseException as exc:
            if is_cancelled_exception(exc):
                await asyncio.shield(asyncio.ensure_future(self._on_cancel()))
                raise
            if not isinstance(exc, ActivityError | ChildWorkflowError | ApplicationError):
                raise  # a bug in the workflow itself: fail the task so a fixed worker can resume
            reason = short_reason(exc)
            status = await self._on_failure(reason)
            raise ApplicationError(
                f"pipeline {status.value} at step {self.current}: {reason}",
                type="PipelineFailed",
                non_retryable=True,
            ) from exc

    async def _load(self, inp: PipelineInput) -> PipelineDefinition:
        loaded = await workflow.execute_activity_method(
            PipelineActivities.pipeline_load_version,
            LoadVersionInput(tenant_id=inp.tenant_id, pipeline_id=inp.pipeline_id, version=inp.version),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )
        return loaded.definition

    async def _steps(self, defn: PipelineDefinition) -> None:
        options = self.inp.options
        reusing = options.resume_from is not None
        for step in defn.steps:
            if reusing and step.id == options.resume_from:
                reusing = False
            if reusing and step.id in options.prior_outputs:
                await self._reuse(step.id, sequence_ids([step]), list(walk_steps([step])))
                continue
            self.current = step.id
            await self.step(step)

    async def _reuse(self, step_id: str, ids: set[str], tree: list[Any]) -> None:
        """Take over a completed step of the source run: its outputs, key and compensations."""
        options = self.inp.options
        source = options.source_run or self.wid
        for sid in sorted(ids):
            if sid in options.prior_outputs:
                self.outputs[sid] = options.prior_outputs[sid].model_copy(update={"reused": True})
                self.keys[sid] = f"{source}:{sid}"
        for node in tree:
            if node.id in self.outputs:
                self.register(node)
        await self.progress(PipelineEvent.step_skipped, step_id, "reused", source_run=source)

    async def _outputs(self, defn: PipelineDefinition) -> dict[str, Any]:
        if not defn.outputs:
            return {}
        ctx = StepContext(inputs=self.inp.inputs, steps=dict(self.outputs), keys=dict(self.keys))
        out = await workflow.execute_activity_method(
            PipelineActivities.pipeline_outputs,
            OutputsCall(
                tenant_id=self.inp.tenant_id, workflow_id=self.wid, outputs=defn.outputs, context=ctx
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )
        if out.ref is not None:
            return {"ref": out.ref.model_dump()}
        return dict(out.value or {})

    async def _on_failure(self, reason: str) -> PipelineStatus:
        workflow.logger.warning("pipeline step %s failed: %s", self.current, reason)
        had_saga = bool(self.saga)
        outcomes, left = await self.compensate() if had_saga else ([], [])
        status = PipelineStatus.failed
        if had_saga:
            status = PipelineStatus.compensation_failed if left else PipelineStatus.compensated
        if left:
            await self.progress(PipelineEvent.run_compensation_failed, left_undone=left, error=reason)
        result = self._result(status, error=reason, compensations=outcomes, left_undone=left)
        await self._finish(result, PipelineEvent.failed, error=reason)
        return status

    async def _on_cancel(self) -> None:
        had_saga = bool(self.saga)
        outcomes, left = await self.compensate() if had_saga else ([], [])
        status = PipelineStatus.cancelled
        if had_saga:
            status = PipelineStatus.compensation_failed if left else PipelineStatus.compensated
        if left:
            await self.progress(PipelineEvent.run_compensation_failed, left_undone=left, error="cancelled")
        result = self._result(status, error="cancelled", compensations=outcomes, left_undone=left)
        await self._finish(result, PipelineEvent.cancelled, error="cancelled")

    def _result(self, status: PipelineStatus, **fields: Any) -> PipelineResult:
        return PipelineResult(
            status=status,
            pipeline_id=self.inp.pipeline_id,
            version=self.inp.version,
            steps=dict(self.outputs),
            failed_step=self.current if status is not PipelineStatus.completed else None,
            **fields,
        )

    async def _finish(self, result: PipelineResult, event: PipelineEvent, error: str | None = None) -> None:
        """Close the runs row and store the terminal event atomically (one activity)."""
        data = {
            "status": result.status.value,
            "failed_step": result.failed_step,
            "left_undone": result.left_undone,
        }
        terminal = PublishEventInput(
            tenant_id=self.inp.tenant_id, workflow_id=self.wid, seq=self.next_seq(), type=event, data=data
        )
        await workflow.execute_activity_method(
            RunActivities.finish_run,
            FinishRunInput(
                tenant_id=self.inp.tenant_id,
                workflow_id=self.wid,
                kind=RUN_KIND,
                status=RunStatus(result.status.value),
                result={**result.model_dump(mode="json"), "progress": dict(self.states)},
                error=error,
                cost_usd=sum(o.cost_usd for o in self.outputs.values() if not o.reused),
                created_by=self.inp.created_by,
                run_id=workflow.info().run_id,
                terminal_event=terminal,
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )
