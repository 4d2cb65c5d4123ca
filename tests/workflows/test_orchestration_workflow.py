"""The Orchestration workflow against the real dev server, Postgres, Valkey and the simulator."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from core.db.models import Run
from core.orchestration.contracts import (
    Plan,
    RunOutcome,
    Strategy,
    Subtask,
    SubtaskStatus,
)
from tests.workflows.orchestration_support import (
    CLAUDE,
    FAILING,
    GEMINI,
    JUDGE,
    MINI,
    event_types,
    model_calls,
    orchestration_input,
    read_text,
    store_task,
    two_facts_plan,
    wid,
)
from workflows.orchestrate import OrchestrationWorkflow


async def test_planned_multi_subtask_run_completes_with_the_right_answer(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    task = await store_task(
        sessions, tenant, "NEXUS-PLAN-DEMO: first name the capital of a country, then compute a product."
    )
    run_id = wid(tenant)
    result = await temporal_client.execute_workflow(
        OrchestrationWorkflow.run,
        orchestration_input(
            tenant,
            task,
            models=[MINI, GEMINI, CLAUDE],
            planner_model=MINI,
            synthesizer_model=MINI,
            budget_usd=Decimal("1.00"),
        ),
        id=run_id,
        task_queue=task_queue,
    )
    assert result.outcome is RunOutcome.completed
    assert [s.id for s in result.plan.subtasks] == ["capital", "product", "summary"]
    by_id = {s.subtask_id: s for s in result.subtasks}
    assert all(s.status is SubtaskStatus.completed for s in result.subtasks)
    capital = by_id["capital"].consensus
    product = by_id["product"].consensus
    assert capital is not None
    assert capital.answer is not None
    assert product is not None
    assert product.answer is not None
    assert "Paris" in await read_text(sessions, tenant, capital.answer)
    assert (await read_text(sessions, tenant, product.answer)).strip() == "391"
    # Adaptive consensus starts with two models and stops once they agree confidently enough.
    assert 2 <= len(by_id["capital"].candidates) <= 3
    assert result.answer is not None
    assert "Paris" in await read_text(sessions, tenant, result.answer)
    assert {c.subtask_id for c in result.citations} >= {"capital"}

    calls = await model_calls(sessions, run_id)
    assert len({c.call_key for c in calls}) == len(calls)
    assert sum((c.cost_usd for c in calls), Decimal(0)) == result.cost_usd
    assert Decimal(0) < result.cost_usd <= Decimal("1.00")
    assert sum(result.cost_by_model.values(), Decimal(0)) == result.cost_usd

    types = await event_types(sessions, run_id)
    assert types[0] == "run.started"
    assert types[1] == "plan.ready"
    assert types.count("subtask.started") == 3
    assert types.count("subtask.finished") == 3
    assert types.count("consensus.reached") == 3
    assert "synthesis.delta" in types
    assert types[-1] == "run.completed"
    async with sessions() as s:
        run = (await s.execute(select(Run).where(Run.workflow_id == run_id))).scalar_one()
    assert run.status == "completed"
    assert run.kind == "nexus"
    assert run.cost_usd == result.cost_usd.quantize(Decimal("0.000001"))
    assert run.result is not None
    assert run.result["outcome"] == "completed"


async def test_failing_proposer_is_retried_then_recorded_as_failed(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    task = await store_task(sessions, tenant, "Answer two questions.")
    run_id = wid(tenant)
    result = await temporal_client.execute_workflow(
        OrchestrationWorkflow.run,
        orchestration_input(
            tenant,
            task,
            plan=Plan(subtasks=[two_facts_plan().subtasks[0]]),
            strategy=Strategy.majority,
            models=[MINI, FAILING, GEMINI],
        ),
        id=run_id,
        task_queue=task_queue,
    )
    assert result.outcome is RunOutcome.completed
    (subtask,) = result.subtasks
    failed = [c for c in subtask.candidates if not c.ok]
    assert [c.model for c in failed] == [FAILING]
    assert failed[0].error
    assert subtask.consensus is not None
    assert subtask.consensus.failed == [FAILING]
    assert sorted(subtask.consensus.winner_models) == sorted([MINI, GEMINI])
    # Three attempts (Temporal's retries), no usage row: a failed call is not billed.
    history = await temporal_client.get_workflow_handle(run_id).fetch_history()
    attempts = [
        e
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.attempt == 3
    ]
    assert attempts, "the failing proposer was not retried three times"
    assert FAILING not in {c.model for c in await model_calls(sessions, run_id)}
    # A one-subtask plan is answered by its consensus, without a synthesis call.
    assert result.answer is not None
    assert "Paris" in await read_text(sessions, tenant, result.answer)


async def test_budget_exhaustion_mid_run_stops_with_partial_result_within_budget(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Each call reserves ~$0.0025 (4096 completion tokens of gpt-4o-mini): the first of two
    parallel subtasks fits a $0.004 budget, the second does not, the dependent one never runs."""
    task = await store_task(sessions, tenant, "Answer two questions.")
    plan = Plan(
        subtasks=[
            *two_facts_plan().subtasks,
            Subtask(id="summary", instruction="Combine both answers.", depends_on=["capital", "product"]),
        ]
    )
    budget = Decimal("0.004")
    run_id = wid(tenant)
    result = await temporal_client.execute_workflow(
        OrchestrationWorkflow.run,
        orchestration_input(
            tenant,
            task,
            plan=plan,
            strategy=Strategy.majority,
            models=[MINI],
            budget_usd=budget,
            max_tokens=4096,
        ),
        id=run_id,
        task_queue=task_queue,
    )
    assert result.outcome is RunOutcome.budget_exhausted
    statuses = {s.subtask_id: s.status for s in result.subtasks}
    assert sorted(statuses[i] for i in ("capital", "product")) == [
        SubtaskStatus.completed,
        SubtaskStatus.skipped,
    ]
    assert statuses["summary"] is SubtaskStatus.skipped
    assert result.answer is not None  # the partial result: the completed subtask's answer
    assert Decimal(0) < result.cost_usd <= budget
    calls = await model_calls(sessions, run_id)
    assert len(calls) == 1
    assert sum((c.cost_usd for c in calls), Decimal(0)) == result.cost_usd
    assert "budget.exhausted" in await event_types(sessions, run_id)


async def test_semantic_consensus_embeds_the_candidates_once(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    task = await store_task(sessions, tenant, "Answer one question.")
    run_id = wid(tenant)
    result = await temporal_client.execute_workflow(
        OrchestrationWorkflow.run,
        orchestration_input(
            tenant,
            task,
            plan=Plan(subtasks=[two_facts_plan().subtasks[0]]),
            strategy=Strategy.semantic,
            models=[MINI, GEMINI],
        ),
        id=run_id,
        task_queue=task_queue,
    )
    consensus = result.subtasks[0].consensus
    assert consensus is not None
    assert consensus.strategy == "semantic"
    assert sorted(consensus.winner_models) == sorted([MINI, GEMINI])
    keys = [c.call_key for c in await model_calls(sessions, run_id)]
    assert f"{run_id}:capital:consensus:0:embed" in keys
    assert sum((c.cost_usd for c in await model_calls(sessions, run_id)), Decimal(0)) == result.cost_usd


async def test_judge_consensus_calls_the_judge_once_and_bills_it(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    task = await store_task(sessions, tenant, "Answer one question.")
    run_id = wid(tenant)
    result = await temporal_client.execute_workflow(
        OrchestrationWorkflow.run,
        orchestration_input(
            tenant,
            task,
            plan=Plan(subtasks=[two_facts_plan().subtasks[0]]),
            strategy=Strategy.judge,
            models=[MINI, GEMINI],
            judge_model=JUDGE,
        ),
        id=run_id,
        task_queue=task_queue,
    )
    consensus = result.subtasks[0].consensus
    assert consensus is not None
    assert consensus.strategy == "judge"
    assert consensus.error is None
    assert consensus.confidence == 0.9
    assert consensus.reasons == "The candidates agree."
    rows = await model_calls(sessions, run_id)
    assert [r.model for r in rows if r.call_key.endswith(":judge")] == [JUDGE]
    assert sum((r.cost_usd for r in rows), Decimal(0)) == result.cost_usd
    assert result.cost_by_model[JUDGE] > 0
