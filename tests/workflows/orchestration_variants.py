"""A deliberately non-deterministic change of the Orchestration workflow (must fail replay).

It loads the catalog before publishing ``run.started``: the first command in a recorded
history is the ``publish_run_event`` activity, so replay meets a different activity type.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.orchestration import OrchestrationActivities
    from core.orchestration.contracts import OrchestrationInput, OrchestrationResult, RunOutcome
    from core.orchestration.steps import LoadModelsInput


@workflow.defn(name="Orchestration")
class CatalogFirstOrchestrationWorkflow:
    """Orchestration without the start event: a breaking change to the command sequence."""

    @workflow.run
    async def run(self, inp: OrchestrationInput) -> OrchestrationResult:
        await workflow.execute_activity_method(
            OrchestrationActivities.load_models,
            LoadModelsInput(tenant_id=inp.tenant_id),
            start_to_close_timeout=timedelta(seconds=10),
        )
        assert inp.plan is not None
        return OrchestrationResult(outcome=RunOutcome.failed, plan=inp.plan, subtasks=[])
