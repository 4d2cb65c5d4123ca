"""Pipeline steps that run child workflows: ``approval`` (an ``Approval`` child) and ``nexus``
(an ``Orchestration`` child on the simulator). Real dev server, Postgres, Valkey, simulator."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError

from core.approvals.client import send_decision
from core.approvals.contracts import ApprovalStatus, Decision
from core.config import Settings
from core.orchestration.contracts import OrchestrationResult
from core.pipelines.contracts import PipelineResult
from tests.workflows.approval_support import decision, wait_row
from tests.workflows.orchestration_support import GEMINI, MINI
from tests.workflows.pipeline_support import (
    http_step,
    new_wid,
    pipeline_worker,
    receiver,
    run_input,
    run_rows,
)
from workflows.pipeline import PipelineWorkflow
from workflows.pipeline_options import run_key

Deps = tuple[Client, Settings, async_sessionmaker[AsyncSession], Redis, str]


@pytest.fixture
def deps(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    task_queue: str,
) -> Deps:
    return temporal_client, settings, sessions, redis_client, task_queue


def gated(url: str) -> dict[str, Any]:
    """Reserve, ask for approval, then ship; the reservation is undone if the gate says no."""
    fast = {"initial_interval_s": 0.05, "max_attempts": 5}
    return {
        "name": "gated",
        "inputs": {"what": {"type": "string"}},
        "steps": [
            http_step(
                "reserve", url + "/reserve", compensation=http_step("release", url + "/release", retry=fast)
            ),
            {
                "id": "gate",
                "type": "approval",
                "title": "Ship {{ inputs.what }}?",
                "context": "Reserved with key `{{ steps.reserve.idempotency_key }}`.",
                "assignees": {"roles": ["approver"]},
            },
            http_step("ship", url + "/ship"),
        ],
        "outputs": {"decision": "=steps.gate.output.status"},
    }


async def _decide_gate(deps: Deps, tenant: str, wid: str, verdict: Decision) -> None:
    client, _, sessions, _, _ = deps
    approval_id = f"{run_key(wid)}.gate"
    pending = await wait_row(sessions, tenant, approval_id)
    assert pending.parent_workflow_id == wid
    assert pending.title == "Ship the letter?"
    assert pending.context == f"Reserved with key `{wid}:reserve`."
    await send_decision(client, tenant, approval_id, decision(tenant, decision=verdict))


async def test_approved_gate_lets_the_pipeline_continue(deps: Deps, tenant: str) -> None:
    client, settings, sessions, redis, queue = deps
    wid = new_wid(tenant)
    async with receiver() as recv, pipeline_worker(client, settings, sessions, redis, queue):
        handle = await client.start_workflow(
            PipelineWorkflow.run,
            run_input(tenant, gated(recv.url), {"what": "the letter"}),
            id=wid,
            task_queue=queue,
            result_type=PipelineResult,
        )
        await _decide_gate(deps, tenant, wid, Decision.approve)
        result = await handle.result()
    assert result.status == "completed"
    assert result.outputs == {"decision": ApprovalStatus.approved.value}
    assert recv.paths() == ["/reserve", "/ship"]
    run, events = await run_rows(sessions, wid)
    assert run is not None
    assert run.status == "completed"
    assert [e.type for e in events if e.data.get("step") == "gate"] == ["step.started", "step.completed"]
    gate = result.steps["gate"].value
    assert gate["decision"]["decision"] == "approve"
    assert gate["decision"]["actor"] == "key:approver-1"


async def test_rejected_gate_fails_the_step_and_compensates_earlier_steps(deps: Deps, tenant: str) -> None:
    client, settings, sessions, redis, queue = deps
    wid = new_wid(tenant)
    async with receiver() as recv, pipeline_worker(client, settings, sessions, redis, queue):
        handle = await client.start_workflow(
            PipelineWorkflow.run,
            run_input(tenant, gated(recv.url), {"what": "the letter"}),
            id=wid,
            task_queue=queue,
            result_type=PipelineResult,
        )
        await _decide_gate(deps, tenant, wid, Decision.reject)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    # The gate said no: ship never ran, the reservation was released exactly once.
    assert recv.paths() == ["/reserve", "/release"]
    assert recv.effects["/release"] == [f"{wid}:comp:reserve"]
    run, events = await run_rows(sessions, wid)
    assert run is not None
    assert run.status == "compensated"
    assert run.result is not None
    assert run.result["failed_step"] == "gate"
    assert [c["step_id"] for c in run.result["compensations"]] == ["reserve"]
    failed = [e.data for e in events if e.type == "step.failed"]
    assert failed == [{"step": "gate", "error": "approval rejected"}]


async def test_nexus_step_answers_through_a_child_orchestration(deps: Deps, tenant: str) -> None:
    client, settings, sessions, redis, queue = deps
    raw = {
        "name": "ask",
        "inputs": {"country": {"type": "string"}},
        "steps": [
            {
                "id": "ask",
                "type": "nexus",
                "task": "What is the capital of {{ inputs.country }}?",
                "strategy": "majority",
                "models": [MINI, GEMINI],
                "budget_usd": 0.5,
            }
        ],
        "outputs": {"answer": "=steps.ask.output"},
    }
    wid = new_wid(tenant)
    async with pipeline_worker(client, settings, sessions, redis, queue):
        result = await client.execute_workflow(
            PipelineWorkflow.run,
            run_input(tenant, raw, {"country": "France"}),
            id=wid,
            task_queue=queue,
            result_type=PipelineResult,
        )
        child = client.get_workflow_handle(
            f"nexus:{tenant}:{run_key(wid)}.ask", result_type=OrchestrationResult
        )
        nexus = await child.result()
    assert result.status == "completed"
    assert result.outputs == {"answer": "The capital of France is Paris."}
    assert nexus.outcome == "completed"
    assert sorted(nexus.subtasks[0].candidates[i].model for i in range(2)) == sorted([MINI, GEMINI])
    step = result.steps["ask"]
    assert step.text is True
    assert step.cost_usd == pytest.approx(float(nexus.cost_usd))
    assert step.cost_usd > 0
    nexus_run, _ = await run_rows(sessions, child.id)
    assert nexus_run is not None
    assert nexus_run.status == "completed"
