"""Deliberately non-deterministic changes of the Orchestration workflow (must fail replay).

``CatalogFirstOrchestrationWorkflow`` loads the catalog before publishing ``run.started``: the
first command in ``orchestration_v1.json`` is the ``publish_run_event`` activity, so replay meets
a different activity type. ``ConsensusActivityOrchestrationWorkflow`` drops the inline vote's
patch guard (see its docstring) and must fail on ``orchestration_v2.json``.
``BetaRuleOrchestrationWorkflow`` drops the sequential scheme's patch guard and
``EagerProgressOrchestrationWorkflow`` the durable timer of batched progress; each must fail on
``orchestration_v3.json``. ``RetrievalFreeOrchestrationWorkflow`` leaves the retrieval cost out
whatever the ``nexus-retrieval-cost`` patch says; ``tests/api/test_kb_nexus_cost.py`` replays a
grounded run's history with it.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.orchestration import OrchestrationActivities
    from core.orchestration.contracts import OrchestrationInput, OrchestrationResult, RunOutcome
    from core.orchestration.steps import ConsensusResult, LoadModelsInput
    from workflows.orchestrate import OrchestrationWorkflow


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


@workflow.defn(name="Orchestration")
class ConsensusActivityOrchestrationWorkflow(OrchestrationWorkflow):
    """The inline-consensus path without its patch guard: it always votes in a ``run_consensus``
    activity. Replaying a history recorded on the inline path (``orchestration_v2.json``) meets
    a scheduled activity where the history has none, so it must fail."""

    @workflow.run
    async def run(self, inp: OrchestrationInput) -> OrchestrationResult:
        return await super().run(inp)

    def _vote_inline(self, *args: Any, **kwargs: Any) -> ConsensusResult | None:
        return None


@workflow.defn(name="Orchestration")
class BetaRuleOrchestrationWorkflow(OrchestrationWorkflow):
    """Adaptive without the sequential scheme's patch guard: always the Beta rule over the panel
    order. ``orchestration_v3.json`` (target 0.9) first asks Claude alone; this asks Claude and
    gpt-4o-mini at once, a command the history does not have, so it must fail."""

    @workflow.run
    async def run(self, inp: OrchestrationInput) -> OrchestrationResult:
        return await super().run(inp)

    def _pool(self, *args: Any, **kwargs: Any) -> dict[str, Decimal] | None:
        return None


@workflow.defn(name="Orchestration")
class EagerProgressOrchestrationWorkflow(OrchestrationWorkflow):
    """Batched progress writing a finished subtask's events at once instead of after a durable
    timer: ``orchestration_v3.json`` has a timer started (and cancelled) where this has none."""

    @workflow.run
    async def run(self, inp: OrchestrationInput) -> OrchestrationResult:
        return await super().run(inp)

    def _flush_soon(self, inp: OrchestrationInput) -> None:
        self._start_flush(inp)


@workflow.defn(name="Orchestration")
class RetrievalFreeOrchestrationWorkflow(OrchestrationWorkflow):
    """Grounded subtasks without the retrieval-cost patch's effect: the query embeddings stay out
    of the budget. A history in which that cost left too little for the proposer (the subtask
    was skipped) meets a proposer call here that the history does not have, so it must fail."""

    @workflow.run
    async def run(self, inp: OrchestrationInput) -> OrchestrationResult:
        return await super().run(inp)

    def _count_retrieval(self, *args: Any, **kwargs: Any) -> None:
        return None

    def _retrieval_of(self, *args: Any, **kwargs: Any) -> Decimal:
        return Decimal(0)
