"""The saga of a ``Pipeline`` run: compensations registered before their steps, undone in reverse.

Each compensation runs as its step kind requires (an activity or a child workflow), with at
least ``MIN_COMPENSATION_ATTEMPTS`` retries and the idempotency key ``workflow_id:comp:step_id``
(undo activities check-then-act on it, so a retried undo has one effect). The whole undo runs
shielded from a further cancellation request: a cancelled run still finishes its undo.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from core.pipelines.contracts import CompensationOutcome, PipelineEvent, StepOutput
    from core.pipelines.definition import Step
    from workflows.pipeline_options import short_reason
    from workflows.pipeline_steps import StepRunner


class Saga(StepRunner):
    """Adds compensation bookkeeping to :class:`StepRunner`."""

    saga: list[tuple[str, Step]]

    def register(self, step: Step) -> None:
        """Remember ``step``'s compensation; called before the step runs."""
        if step.compensation is not None:
            self.saga.append((step.id, step.compensation))

    async def compensate(self) -> tuple[list[CompensationOutcome], list[str]]:
        """Run every registered compensation in reverse order; returns (outcomes, left undone)."""
        task = asyncio.ensure_future(self._undo_all())
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    raise
                # A second cancellation request: keep waiting, the undo must finish.

    async def _undo_all(self) -> tuple[list[CompensationOutcome], list[str]]:
        outcomes: list[CompensationOutcome] = []
        left: list[str] = []
        for parent, comp in reversed(self.saga):
            key = f"{self.wid}:comp:{parent}"
            # The undo sees its step's output (null when the step did not complete) and key.
            ctx = self.context(comp, {parent: self.outputs.get(parent, StepOutput())})
            ctx.keys.setdefault(parent, self.keys.get(parent, ""))
            try:
                await self.execute(comp, key, ctx, comp_of=parent)
            except (ActivityError, ChildWorkflowError, ApplicationError) as exc:
                reason = short_reason(exc)
                outcomes.append(
                    CompensationOutcome(step_id=parent, compensation_id=comp.id, ok=False, error=reason)
                )
                left.append(parent)
                await self.progress(
                    PipelineEvent.compensation_failed, parent, "compensation_failed", error=reason
                )
                continue
            self.states[parent] = "compensated"
            outcomes.append(CompensationOutcome(step_id=parent, compensation_id=comp.id, ok=True))
        self.saga.clear()
        return outcomes, left
