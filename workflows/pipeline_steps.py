"""Step execution of the ``Pipeline`` workflow: one method per step kind (deterministic).

Activity steps (``http``, ``llm``, ``transform``) store their own started/completed events
under seqs reserved here; workflow-side steps (``wait``, ``parallel``, ``branch``,
``approval``, ``sub_pipeline``, ``nexus``) publish theirs through ``pipeline_progress``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.connectors import ConnectorActivities
    from activities.pipeline_steps import PipelineActivities
    from core.approvals.contracts import ApprovalRequest, ApprovalResult, ApprovalStatus, Decision
    from core.connector_contracts import ConnectorCall, PlanInput
    from core.orchestration.contracts import OrchestrationInput, OrchestrationResult
    from core.pipelines.contracts import (
        APPROVAL_WORKFLOW,
        ORCHESTRATION_WORKFLOW,
        WORKFLOW_NAME,
        EventSeqs,
        LoadVersionInput,
        PipelineEvent,
        PipelineInput,
        PipelineResult,
        ProgressInput,
        RenderCall,
        Rendered,
        StepCall,
        StepContext,
        StepOutput,
    )
    from core.pipelines.definition import (
        ApprovalStep,
        BranchStep,
        ConnectorStep,
        HttpStep,
        LlmStep,
        NexusStep,
        ParallelStep,
        RagStep,
        Step,
        SubPipelineStep,
        TransformStep,
        WaitStep,
    )
    from core.pipelines.validate import referenced_steps
    from workflows.pipeline_options import WRITE_RETRY, WRITE_TIMEOUT, retry_policy, run_key, short_reason

_ACTIVITY_STEPS: dict[type, Any] = {
    HttpStep: PipelineActivities.pipeline_http,
    LlmStep: PipelineActivities.pipeline_llm,
    TransformStep: PipelineActivities.pipeline_transform,
    RagStep: PipelineActivities.pipeline_rag,
}


class StepRunner:
    """State and step methods shared by the workflow class (``PipelineWorkflow``)."""

    inp: PipelineInput
    outputs: dict[str, StepOutput]
    keys: dict[str, str]
    states: dict[str, str]
    seq: int
    saga: list[tuple[str, Step]]
    _connector_undo: dict[str, bool]  # step id -> blocking, for steps whose declared undo is registered

    @property
    def wid(self) -> str:
        return workflow.info().workflow_id

    def next_seq(self) -> int:
        # Taken before any await, so concurrent branches get distinct, replay-stable numbers.
        self.seq += 1
        return self.seq

    async def progress(
        self, event: str, step_id: str | None = None, state: str | None = None, **data: Any
    ) -> None:
        """Store (and publish) one event; with ``step_id`` the runs row's step state too."""
        if step_id is not None and state is not None:
            self.states[step_id] = state
        await workflow.execute_activity_method(
            PipelineActivities.pipeline_progress,
            ProgressInput(
                tenant_id=self.inp.tenant_id,
                workflow_id=self.wid,
                seq=self.next_seq(),
                type=event,
                step_id=step_id,
                state=state,
                data={"step": step_id, **data} if step_id else data,
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )

    def context(self, step: Step, extra: dict[str, StepOutput] | None = None) -> StepContext:
        """Only the outputs the step's templates name travel with it (histories stay small)."""
        # Parsing templates is pure and deterministic (no code generation, no I/O); the parser's
        # caches take locks, which the sandbox's proxies would refuse.
        with workflow.unsafe.sandbox_unrestricted():
            names = referenced_steps(step)
        steps = {n: self.outputs[n] for n in sorted(names) if n in self.outputs}
        steps.update(extra or {})
        keys = {n: self.keys[n] for n in steps if n in self.keys}
        return StepContext(inputs=self.inp.inputs, steps=steps, keys=keys)

    async def sequence(self, steps: list[Step]) -> StepOutput | None:
        """Run steps in order; returns the last one's output."""
        last: StepOutput | None = None
        for step in steps:
            last = await self.step(step)
        return last

    async def step(self, step: Step) -> StepOutput:
        """Run one step (its compensation is registered first); on failure emit ``step.failed``."""
        if step.compensation is not None:
            self.register(step)
        key = f"{self.wid}:{step.id}"
        self.keys[step.id] = key
        try:
            out = await self.execute(step, key, self.context(step), comp_of=None)
        except (ActivityError, ChildWorkflowError, ApplicationError) as exc:
            if not is_cancelled_exception(exc):
                await self.progress(PipelineEvent.step_failed, step.id, "failed", error=short_reason(exc))
            raise
        self.outputs[step.id] = out
        self.states[step.id] = "completed"
        return out

    def register(self, step: Step) -> None:  # implemented by the saga mixin
        raise NotImplementedError

    async def execute(self, step: Step, key: str, ctx: StepContext, comp_of: str | None) -> StepOutput:
        """Dispatch one step (or a compensation of ``comp_of``) to its kind."""
        if isinstance(step, ConnectorStep) and workflow.patched("connector-steps"):
            return await self.connector(step, key, ctx, comp_of)
        activity_fn = _ACTIVITY_STEPS.get(type(step))
        if activity_fn is not None:
            return await self.activity_step(activity_fn, step, key, ctx, comp_of)
        label = comp_of or step.id
        comp = comp_of is not None
        started = PipelineEvent.compensation_started if comp else PipelineEvent.step_started
        await self.progress(started, label, "compensating" if comp else "running", type=step.type)
        if isinstance(step, ConnectorStep):
            raise ApplicationError(
                f"{step.type} steps are not available yet", type="StepNotAvailable", non_retryable=True
            )
        if isinstance(step, WaitStep):
            out = await self.wait(step, key, ctx)
        elif isinstance(step, ParallelStep):
            out = await self.parallel(step)
        elif isinstance(step, BranchStep):
            out = await self.branch(step, key, ctx)
        elif isinstance(step, ApprovalStep):
            out = await self.approval(step, key, ctx)
        elif isinstance(step, SubPipelineStep):
            out = await self.sub_pipeline(step, key, ctx)
        elif isinstance(step, NexusStep):
            out = await self.nexus(step, key, ctx)
        else:  # pragma: no cover - the Step union is closed
            raise ApplicationError(f"unknown step type {step.type}", type="BadInput", non_retryable=True)
        done = PipelineEvent.compensation_completed if comp else PipelineEvent.step_completed
        await self.progress(done, label, "compensated" if comp else "completed")
        return out

    async def activity_step(
        self, fn: Any, step: Step, key: str, ctx: StepContext, comp_of: str | None
    ) -> StepOutput:
        seqs = EventSeqs(
            started=self.next_seq(),
            completed=self.next_seq(),
            kind="compensation" if comp_of else "step",
            parent=comp_of,
        )
        self.states[comp_of or step.id] = "compensating" if comp_of else "running"
        out: StepOutput = await workflow.execute_activity_method(
            fn,
            StepCall(
                tenant_id=self.inp.tenant_id,
                workflow_id=self.wid,
                step=step.model_dump(mode="json"),
                idempotency_key=key,
                context=ctx,
                events=seqs,
            ),
            start_to_close_timeout=timedelta(seconds=step.timeout_s),
            retry_policy=retry_policy(step.retry, compensation=comp_of is not None),
        )
        return out

    async def connector(
        self, step: ConnectorStep, key: str, ctx: StepContext, comp_of: str | None
    ) -> StepOutput:
        """A connector action; its declared compensation is registered before it runs.

        A step without its own ``compensation`` whose action declares one (create_case ↔
        close_case) gets that undo on the saga: it runs the recorded undo input of this step's
        effect (nothing when the action never completed) under ``workflow_id:comp:step_id``.
        """
        undo = getattr(self, "_connector_undo", None)
        if undo is None:
            undo = self._connector_undo = {}
        undo_of = comp_of if comp_of is not None and comp_of in undo else None
        if undo_of is not None:
            blocking = undo[undo_of]
        else:
            plan = await workflow.execute_activity_method(
                ConnectorActivities.connector_plan,
                PlanInput(
                    tenant_id=self.inp.tenant_id,
                    workflow_id=self.wid,
                    connection=step.connection,
                    action=step.action,
                ),
                start_to_close_timeout=WRITE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
            blocking = plan.blocking
            if comp_of is None and step.compensation is None and plan.compensation:
                undo[step.id] = plan.blocking
                self.saga.append((step.id, step))
        seqs = EventSeqs(
            started=self.next_seq(),
            completed=self.next_seq(),
            kind="compensation" if comp_of else "step",
            parent=comp_of,
        )
        self.states[comp_of or step.id] = "compensating" if comp_of else "running"
        fn = (
            ConnectorActivities.connector_action_blocking
            if blocking
            else ConnectorActivities.connector_action
        )
        out: StepOutput = await workflow.execute_activity_method(
            fn,
            ConnectorCall(
                tenant_id=self.inp.tenant_id,
                workflow_id=self.wid,
                step=step.model_dump(mode="json"),
                idempotency_key=key,
                context=ctx,
                events=seqs,
                undo_of=undo_of,
            ),
            start_to_close_timeout=timedelta(seconds=step.timeout_s),
            retry_policy=retry_policy(step.retry, compensation=comp_of is not None),
        )
        return out

    async def render(
        self, key: str, ctx: StepContext, templates: dict[str, Any], store: list[str]
    ) -> Rendered:
        return await workflow.execute_activity_method(
            PipelineActivities.pipeline_render,
            RenderCall(
                tenant_id=self.inp.tenant_id,
                workflow_id=self.wid,
                idempotency_key=key,
                templates=templates,
                store=store,
                context=ctx,
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )

    async def wait(self, step: WaitStep, key: str, ctx: StepContext) -> StepOutput:
        seconds = step.seconds or 0.0
        if step.until:
            rendered = await self.render(key, ctx, {"until": step.until}, [])
            try:
                until = datetime.fromisoformat(str(rendered.values["until"]))
            except ValueError:
                raise ApplicationError("wait.until is not an ISO-8601 time", type="BadInput") from None
            if until.tzinfo is None:
                raise ApplicationError("wait.until needs a time zone", type="BadInput", non_retryable=True)
            seconds = max(0.0, (until - workflow.now()).total_seconds())
        if seconds > 0:
            await workflow.sleep(timedelta(seconds=seconds))
        return StepOutput(value={"waited_s": seconds})

    async def parallel(self, step: ParallelStep) -> StepOutput:
        # Every branch runs to its end before a failure is raised, so the saga never races a branch.
        results = await asyncio.gather(*(self.sequence(b) for b in step.branches), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return StepOutput(value={"branches": len(step.branches)})

    async def branch(self, step: BranchStep, key: str, ctx: StepContext) -> StepOutput:
        choice = await workflow.execute_activity_method(
            PipelineActivities.pipeline_branch,
            StepCall(
                tenant_id=self.inp.tenant_id,
                workflow_id=self.wid,
                step=step.model_dump(mode="json"),
                idempotency_key=key,
                context=ctx,
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )
        steps = step.cases[choice.case].steps if choice.case >= 0 else step.otherwise
        last = await self.sequence(steps)
        value: dict[str, Any] = {"case": choice.case if choice.case >= 0 else "otherwise"}
        if last is not None and last.ref is None:
            value["output"] = last.value
        return StepOutput(value=value)

    async def approval(self, step: ApprovalStep, key: str, ctx: StepContext) -> StepOutput:
        rendered = await self.render(key, ctx, {"title": step.title, "context": step.context}, [])
        approval_id = f"{run_key(self.wid)}.{step.id}"
        request = ApprovalRequest(
            tenant_id=self.inp.tenant_id,
            approval_id=approval_id,
            title=str(rendered.values["title"])[:300],
            context_markdown=str(rendered.values["context"]),
            assignees=step.assignees,
            due_in_s=step.due_in_s,
            escalation=step.escalation,
            on_timeout=step.on_timeout,
            notify=step.notify,
            parent_workflow_id=self.wid,
            requested_by=self.inp.created_by,
        )
        result: ApprovalResult = await workflow.execute_child_workflow(
            APPROVAL_WORKFLOW,
            request,
            id=f"approval:{self.inp.tenant_id}:{approval_id}",
            result_type=ApprovalResult,
        )
        approved = result.status is ApprovalStatus.approved or result.outcome is Decision.approve
        if not approved:
            raise ApplicationError(
                f"approval {result.status.value}", type="ApprovalRejected", non_retryable=True
            )
        decision = result.decision.model_dump(mode="json") if result.decision else None
        return StepOutput(value={"status": result.status.value, "decision": decision})

    async def sub_pipeline(self, step: SubPipelineStep, key: str, ctx: StepContext) -> StepOutput:
        loaded = await workflow.execute_activity_method(
            PipelineActivities.pipeline_load_version,
            LoadVersionInput(tenant_id=self.inp.tenant_id, pipeline_id=step.pipeline, version=step.version),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )
        rendered = await self.render(key, ctx, {"inputs": step.inputs}, []) if step.inputs else Rendered()
        child = PipelineInput(
            tenant_id=self.inp.tenant_id,
            pipeline_id=step.pipeline,
            version=loaded.version,
            definition=loaded.definition,
            inputs=dict(rendered.values.get("inputs") or {}),
            created_by=self.inp.created_by,
            parent_workflow_id=self.wid,
        )
        result: PipelineResult = await workflow.execute_child_workflow(
            WORKFLOW_NAME, child, id=key.replace(":comp:", ":comp.", 1) + ":sub", result_type=PipelineResult
        )
        return StepOutput(value={"outputs": result.outputs, "version": result.version})

    async def nexus(self, step: NexusStep, key: str, ctx: StepContext) -> StepOutput:
        rendered = await self.render(key, ctx, {"task": step.task}, ["task"])
        child = OrchestrationInput(
            tenant_id=self.inp.tenant_id,
            created_by=self.inp.created_by,
            task=rendered.refs["task"],
            strategy=step.strategy,
            models=step.models,
            budget_usd=step.budget_usd,
        )
        nexus_id = f"nexus:{self.inp.tenant_id}:{run_key(key)}"
        result: OrchestrationResult = await workflow.execute_child_workflow(
            ORCHESTRATION_WORKFLOW, child, id=nexus_id, result_type=OrchestrationResult
        )
        if result.answer is None:
            raise ApplicationError(
                f"nexus run ended {result.outcome}", type="NexusFailed", non_retryable=True
            )
        return StepOutput(ref=result.answer, text=True, cost_usd=float(result.cost_usd))
