"""A deliberately non-deterministic change of the EvalRun workflow (must fail replay).

It prepares before announcing ``run.started``: the first command of a recorded history is the
``publish_run_event`` local activity, so replay meets a different activity.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.evals import EvalActivities
    from evals.targets import EvalEvent, EvalRunInput, EvalRunResult, PrepareInput
    from workflows.eval_run import WRITE_RETRY, WRITE_TIMEOUT, EvalRunWorkflow


@workflow.defn(name="EvalRun")
class PrepareFirstEvalRunWorkflow(EvalRunWorkflow):
    """Prepare first, start event after: a breaking change to the command sequence."""

    @workflow.run
    async def run(self, inp: EvalRunInput) -> EvalRunResult:
        self.inp = inp
        self.wid = workflow.info().workflow_id
        await workflow.execute_activity_method(
            EvalActivities.eval_prepare,
            PrepareInput(workflow_id=self.wid, run=inp),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )
        await self._event(EvalEvent.started)
        return EvalRunResult(status="completed")
