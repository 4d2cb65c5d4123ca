"""The ``EvalRun`` workflow: evaluate a target on a dataset version, durably and within budget.

Cases fan out in bounded batches (``batch_size`` cases per activity, ``batch_concurrency``
batches in flight); each batch is one heartbeating activity that evaluates its cases (model and
knowledge-base targets: retrieval and answer happen in the activity) — or, for
pipeline / NEXUS targets, one child workflow per case followed by one scoring activity. After
every batch a progress event carries partial aggregates. A crash resumes from history; cases
whose result row exists are returned as stored, so nothing is evaluated or billed twice.
Dispatch stops when spent + in flight + the next batch's estimate exceeds the budget (status
``budget_exhausted`` with partial results). Then the aggregate, the regression verdict against
the baseline run, and alerts through the approvals' notification channels.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.evals import BATCH_MAX_ATTEMPTS, EvalActivities
    from activities.runs import RunActivities
    from core.contracts import PublishEventInput
    from core.orchestration.contracts import RUN_KIND as NEXUS_KIND
    from core.orchestration.contracts import WORKFLOW_NAME as NEXUS_WORKFLOW
    from core.orchestration.contracts import OrchestrationInput
    from core.pipelines.contracts import RUN_KIND as PIPELINE_KIND
    from core.pipelines.contracts import WORKFLOW_NAME as PIPELINE_WORKFLOW
    from core.pipelines.contracts import PipelineInput
    from evals.runner import partial_aggregates
    from evals.targets import (
        AggregateInput,
        AlertInput,
        BatchResult,
        CaseInputsInput,
        CaseOutput,
        CaseSummary,
        EvalEvent,
        EvalRunInput,
        EvalRunResult,
        EvalStatus,
        EvaluateBatchInput,
        FinishEvalInput,
        KnowledgeBaseTarget,
        ModelTarget,
        NexusTarget,
        PipelineTarget,
        PrepareInput,
        PrepareResult,
        RegressionInput,
        ScoreOutputsInput,
    )

WRITE_TIMEOUT = timedelta(seconds=30)
WRITE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=10)
BATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_attempts=BATCH_MAX_ATTEMPTS
)
HEARTBEAT = timedelta(seconds=10)
CHILD_TIMEOUT = timedelta(hours=2)


@workflow.defn(name="EvalRun")
class EvalRunWorkflow:
    """Evaluate ``inp.target`` on a dataset version. Events: ``run.started``, ``eval.progress``
    per batch (done/total, spent, partial means and pass rate), ``eval.budget_exhausted``,
    ``eval.aggregated``, ``eval.regressed``; then ``run.completed`` / ``run.failed`` /
    ``run.cancelled`` stored with the closed ``eval_runs`` and ``runs`` rows."""

    def __init__(self) -> None:
        self.seq = 0
        self.cases: list[CaseSummary] = []
        self.total = 0
        self.spent = 0.0
        self.reserved = 0.0

    @workflow.run
    async def run(self, inp: EvalRunInput) -> EvalRunResult:
        self.inp = inp
        self.wid = workflow.info().workflow_id
        try:
            await self._event(
                EvalEvent.started,
                dataset=inp.dataset_id,
                version=inp.dataset_version,
                target=inp.target.kind,
                baseline=inp.baseline_run_id,
            )
            prep: PrepareResult = await workflow.execute_activity_method(
                EvalActivities.eval_prepare,
                PrepareInput(workflow_id=self.wid, run=inp),
                start_to_close_timeout=WRITE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
            self.total = len(prep.case_ids)
            exhausted = await self._dispatch(prep)
            aggregates: dict[str, Any] = await workflow.execute_activity_method(
                EvalActivities.eval_aggregate,
                AggregateInput(workflow_id=self.wid, run=inp),
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=WRITE_RETRY,
            )
            await self._event(EvalEvent.aggregated, aggregates=aggregates)
            verdict = await self._regression() if inp.baseline_run_id else None
            status = EvalStatus.budget_exhausted if exhausted else EvalStatus.completed
            await self._finish(status, EvalEvent.completed)
            return EvalRunResult(
                status=status,
                evaluated=len(self.cases),
                cost_usd=self.spent,
                aggregates=aggregates,
                regression=verdict,
            )
        except BaseException as exc:
            if is_cancelled_exception(exc):
                await asyncio.shield(
                    asyncio.ensure_future(
                        self._finish(EvalStatus.cancelled, EvalEvent.cancelled, error="cancelled")
                    )
                )
                raise
            if not isinstance(exc, ActivityError | ChildWorkflowError | ApplicationError):
                raise  # a bug in the workflow itself: fail the task so a fixed worker can resume
            reason = (
                str(exc.cause or exc) if isinstance(exc, ActivityError | ChildWorkflowError) else str(exc)
            )
            await self._finish(EvalStatus.failed, EvalEvent.failed, error=reason[:500])
            raise ApplicationError(
                f"eval run failed: {reason[:500]}", type="EvalFailed", non_retryable=True
            ) from exc

    # --- fan-out --------------------------------------------------------------------------------

    def _per_case_estimate(self, prep: PrepareResult) -> float:
        paid = [c.cost_usd for c in self.cases if not c.reused]
        return sum(paid) / len(paid) if paid else prep.estimate_per_case_usd

    async def _dispatch(self, prep: PrepareResult) -> bool:
        """Run the batches with bounded concurrency; True when the budget stopped dispatching."""
        size = self.inp.batch_size
        batches = [prep.case_ids[i : i + size] for i in range(0, len(prep.case_ids), size)]
        gate = asyncio.Semaphore(self.inp.batch_concurrency)
        tasks: list[asyncio.Task[None]] = []
        exhausted = False
        for batch in batches:
            await gate.acquire()
            estimate = self._per_case_estimate(prep) * len(batch)
            budget = self.inp.budget_usd
            if budget is not None and self.spent + self.reserved + estimate > budget:
                gate.release()
                exhausted = True
                break
            self.reserved += estimate
            tasks.append(asyncio.ensure_future(self._batch(batch, estimate, gate)))
        await asyncio.gather(*tasks)
        if exhausted:
            await self._event(
                EvalEvent.budget_exhausted,
                evaluated=len(self.cases),
                total=self.total,
                spent_usd=self.spent,
                budget_usd=self.inp.budget_usd,
            )
        return exhausted

    async def _batch(self, case_ids: list[str], estimate: float, gate: asyncio.Semaphore) -> None:
        try:
            if isinstance(self.inp.target, ModelTarget | KnowledgeBaseTarget):
                result: BatchResult = await workflow.execute_activity_method(
                    EvalActivities.eval_evaluate_cases,
                    EvaluateBatchInput(workflow_id=self.wid, run=self.inp, case_ids=case_ids),
                    start_to_close_timeout=timedelta(minutes=10),
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=BATCH_RETRY,
                )
                cases = result.cases
            else:
                cases = await self._child_batch(case_ids)
        finally:
            self.reserved -= estimate
            gate.release()
        self.cases.extend(cases)
        self.spent += sum(c.cost_usd for c in cases)
        await self._event(
            EvalEvent.progress,
            done=len(self.cases),
            total=self.total,
            spent_usd=round(self.spent, 8),
            errors=sum(1 for c in self.cases if c.error),
            partial=partial_aggregates(self.cases, [m.name for m in self.inp.metrics]),
        )

    async def _child_batch(self, case_ids: list[str]) -> list[CaseSummary]:
        """Pipeline / NEXUS targets: one child workflow per pending case, then one scoring activity."""
        pending = await workflow.execute_activity_method(
            EvalActivities.eval_case_inputs,
            CaseInputsInput(workflow_id=self.wid, run=self.inp, case_ids=case_ids),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )
        todo = [c for c in case_ids if c in pending.inputs or c in pending.refs]
        outputs = await asyncio.gather(
            *(self._child(c, pending.inputs.get(c), pending.refs.get(c)) for c in todo)
        )
        scored = BatchResult(cases=[])
        if outputs:
            scored = await workflow.execute_activity_method(
                EvalActivities.eval_score_outputs,
                ScoreOutputsInput(workflow_id=self.wid, run=self.inp, outputs=list(outputs)),
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=BATCH_RETRY,
            )
        return [*pending.done, *scored.cases]

    def _child_id(self, kind: str, case_id: str) -> str:
        digest = hashlib.sha256(f"{self.wid}\n{case_id}".encode()).hexdigest()[:24]
        return f"{kind}:{self.inp.tenant_id}:eval-{digest}"

    async def _child(self, case_id: str, text: str | None, ref: Any) -> CaseOutput:
        target = self.inp.target
        started = workflow.now()
        try:
            if isinstance(target, PipelineTarget):
                assert target.version is not None
                result = await workflow.execute_child_workflow(
                    PIPELINE_WORKFLOW,
                    PipelineInput(
                        tenant_id=self.inp.tenant_id,
                        pipeline_id=target.pipeline_id,
                        version=target.version,
                        inputs={target.input_name: text or ""},
                        created_by=self.inp.created_by,
                        parent_workflow_id=self.wid,
                    ),
                    id=self._child_id(PIPELINE_KIND, case_id),
                    execution_timeout=CHILD_TIMEOUT,
                    result_type=dict,
                )
                output = _pipeline_output(case_id, result, target.output)
            elif isinstance(target, NexusTarget):
                result = await workflow.execute_child_workflow(
                    NEXUS_WORKFLOW,
                    OrchestrationInput(
                        tenant_id=self.inp.tenant_id,
                        created_by=self.inp.created_by,
                        task=ref,
                        skip_planning=target.skip_planning,
                        strategy=target.strategy,
                        models=target.models,
                        budget_usd=target.budget_usd,
                        max_tokens=target.max_tokens,
                    ),
                    id=self._child_id(NEXUS_KIND, case_id),
                    execution_timeout=CHILD_TIMEOUT,
                    result_type=dict,
                )
                answer = result.get("answer")
                output = CaseOutput(
                    case_id=case_id,
                    ref=answer,
                    cost_usd=float(result.get("cost_usd") or 0),
                    error=None if answer else "NEXUS run gave no answer",
                )
            else:  # pragma: no cover - validated by the discriminated union
                raise ApplicationError("unknown target kind", non_retryable=True)
        except ChildWorkflowError as exc:
            output = CaseOutput(case_id=case_id, error=f"child workflow failed: {exc.cause or exc}"[:500])
        output.latency_ms = (workflow.now() - started).total_seconds() * 1000
        return output

    # --- after the fan-out ------------------------------------------------------------------------

    async def _regression(self) -> dict[str, Any]:
        verdict = await workflow.execute_activity_method(
            EvalActivities.eval_regression,
            RegressionInput(workflow_id=self.wid, run=self.inp),
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=WRITE_RETRY,
        )
        if verdict.regressed:
            await self._event(EvalEvent.regressed, **verdict.detail)
            assert self.inp.baseline_run_id is not None
            for channel in self.inp.alert_channels:
                await workflow.execute_activity_method(
                    EvalActivities.eval_alert,
                    AlertInput(
                        tenant_id=self.inp.tenant_id,
                        workflow_id=self.wid,
                        channel=channel,
                        baseline_run_id=self.inp.baseline_run_id,
                        dataset_id=self.inp.dataset_id,
                        dataset_version=self.inp.dataset_version,
                        regression=verdict.detail,
                        delivery_id=f"{self.wid}:regressed:{channel}",
                    ),
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=5),
                )
        return verdict.detail

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def _event(self, type: str, **data: Any) -> None:
        await workflow.execute_local_activity_method(
            RunActivities.publish_run_event,
            PublishEventInput(
                tenant_id=self.inp.tenant_id, workflow_id=self.wid, seq=self.next_seq(), type=type, data=data
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )

    async def _finish(self, status: str, event: str, error: str | None = None) -> None:
        await workflow.execute_activity_method(
            EvalActivities.eval_finish,
            FinishEvalInput(
                workflow_id=self.wid,
                run=self.inp,
                status=status,
                seq=self.next_seq(),
                event=event,
                error=error,
                cost_usd=self.spent,
                evaluated=len(self.cases),
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )


def _pipeline_output(case_id: str, result: dict[str, Any], name: str | None) -> CaseOutput:
    """The scored text of a pipeline result: the named (or only/first) output."""
    cost = sum(float(s.get("cost_usd") or 0) for s in (result.get("steps") or {}).values())
    outputs: dict[str, Any] = result.get("outputs") or {}
    if set(outputs) == {"ref"} and isinstance(outputs["ref"], dict):  # large outputs: a claim-check
        return CaseOutput(case_id=case_id, ref=outputs["ref"], pick=name, cost_usd=cost)
    if not outputs:
        return CaseOutput(case_id=case_id, cost_usd=cost, error="pipeline produced no outputs")
    value = outputs.get(name) if name else next(iter(outputs.values()))
    if isinstance(value, dict) and {"id", "sha256"} <= set(value):
        return CaseOutput(case_id=case_id, ref=value, cost_usd=cost)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return CaseOutput(case_id=case_id, text=text, cost_usd=cost)
