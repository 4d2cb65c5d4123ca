"""The ``adaptive`` strategy in the Orchestration workflow: the cost-aware sequential scheme over
the tenant's measured reliabilities, and the gradings each run leaves for the next ones."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from core.db.reliability_models import ConsensusVote
from core.orchestration.contracts import OrchestrationResult, Plan, Strategy, SubtaskResult, SubtaskStatus
from core.orchestration.progress import ConsensusObservation
from core.orchestration.reliability import ReliabilityRepository
from tests.workflows.orchestration_support import (
    CLAUDE,
    GEMINI,
    MINI,
    event_types,
    orchestration_input,
    store_task,
    two_facts_plan,
    wid,
)
from workflows.orchestrate import OrchestrationWorkflow

PANEL = [CLAUDE, MINI, GEMINI]  # the Beta rule would ask the first two


async def _run(
    client: Client, queue: str, tenant: str, sessions: async_sessionmaker[AsyncSession]
) -> tuple[str, OrchestrationResult, SubtaskResult]:
    task = await store_task(sessions, tenant, "What is the capital of France?")
    run_id = wid(tenant)
    result = await client.execute_workflow(
        OrchestrationWorkflow.run,
        orchestration_input(
            tenant,
            task,
            plan=Plan(subtasks=[two_facts_plan().subtasks[0]]),
            strategy=Strategy.adaptive,
            models=PANEL,
        ),
        id=run_id,
        task_queue=queue,
    )
    (subtask,) = result.subtasks
    return run_id, result, subtask


async def _gradings(sessions: async_sessionmaker[AsyncSession], run_id: str) -> dict[str, bool]:
    async with sessions() as s:
        rows = (await s.execute(select(ConsensusVote).where(ConsensusVote.workflow_id == run_id))).scalars()
        return {r.model: r.agreed for r in rows}


async def test_unmeasured_models_start_with_the_cheapest_pair_and_are_graded(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    run_id, result, subtask = await _run(temporal_client, task_queue, tenant, sessions)
    assert subtask.status is SubtaskStatus.completed
    # Every model at the 0.7 prior: the two cheap ones settle it (posterior 0.49 / 0.58 >= 0.8),
    # the expensive first model of the panel is never called.
    assert sorted(c.model for c in subtask.candidates) == sorted([MINI, GEMINI])
    assert subtask.consensus is not None
    assert subtask.consensus.confidence == pytest.approx(0.49 / 0.58)
    assert CLAUDE not in result.cost_by_model
    assert await _gradings(sessions, run_id) == {MINI: True, GEMINI: True}
    types = await event_types(sessions, run_id)
    assert types[:3] == ["run.started", "plan.ready", "subtask.started"]
    assert types[-3:] == ["consensus.reached", "subtask.finished", "run.completed"]


async def test_measured_reliabilities_steer_whom_to_ask(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Past gradings of this tenant: Claude always agreed, gpt-4o-mini never did (40 each)."""
    async with sessions() as session, session.begin():
        repo = ReliabilityRepository.from_session(session)
        for n in range(40):
            await repo.record(
                tenant_id=tenant,
                workflow_id=f"nexus:{tenant}:past-{n}",
                observations=[
                    ConsensusObservation(subtask_id="s", model=CLAUDE, agreed=True),
                    ConsensusObservation(subtask_id="s", model=MINI, agreed=False),
                ],
            )
    run_id, _, subtask = await _run(temporal_client, task_queue, tenant, sessions)
    # Claude (0.94) with the cheapest partner reaches the target; mini + gemini no longer could.
    assert sorted(c.model for c in subtask.candidates) == sorted([CLAUDE, MINI])
    assert subtask.consensus is not None
    assert subtask.consensus.confidence > 0.9
    assert await _gradings(sessions, run_id) == {CLAUDE: True, MINI: True}
