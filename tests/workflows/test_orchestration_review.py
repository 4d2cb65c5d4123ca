"""NEXUS human review: a subtask below ``human_review_below`` waits on an ``Approval`` child.

Real dev server, Postgres, Valkey and simulator; decisions go through the ``decide`` update
(``core.approvals.client.send_decision``, what the approvals API calls). Two agreeing
simulator models reach a majority confidence of 0.75, so a threshold of 0.9 always asks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.worker import Worker

from core.approvals.client import send_decision
from core.approvals.contracts import Decision
from core.db.models import RunEvent
from core.orchestration.contracts import (
    OrchestrationResult,
    Plan,
    RunOutcome,
    Strategy,
    SubtaskStatus,
)
from tests.workflows.approval_support import decision, row, wait_row
from tests.workflows.orchestration_support import (
    GEMINI,
    MINI,
    orchestration_input,
    read_text,
    store_task,
    two_facts_plan,
    wid,
)
from workflows.orchestrate import OrchestrationWorkflow
from workflows.orchestration_review import review_approval_id

CAPITAL_ONLY = Plan(subtasks=[two_facts_plan().subtasks[0]])


async def _start(
    client: Client, tenant: str, task_queue: str, sessions: async_sessionmaker[AsyncSession], **fields: Any
) -> WorkflowHandle[OrchestrationWorkflow, OrchestrationResult]:
    task = await store_task(sessions, tenant, "Answer the questions.")
    inp = orchestration_input(
        tenant,
        task,
        strategy=Strategy.majority,
        models=[MINI, GEMINI],
        synthesizer_model=MINI,
        human_review_below=0.9,
        **fields,
    )
    return await client.start_workflow(OrchestrationWorkflow.run, inp, id=wid(tenant), task_queue=task_queue)


async def _events(sessions: async_sessionmaker[AsyncSession], run_id: str) -> list[RunEvent]:
    async with sessions() as s:
        rows = await s.execute(select(RunEvent).where(RunEvent.workflow_id == run_id).order_by(RunEvent.seq))
        return list(rows.scalars())


async def _decide(client: Client, tenant: str, approval_id: str, verdict: Decision) -> None:
    await send_decision(client, tenant, approval_id, decision(tenant, decision=verdict))


async def test_low_confidence_subtask_waits_for_approval_then_completes(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handle = await _start(temporal_client, tenant, task_queue, sessions, plan=CAPITAL_ONLY)
    approval_id = review_approval_id(handle.id, "capital")
    row = await wait_row(sessions, tenant, approval_id)
    assert row.parent_workflow_id == handle.id
    assert row.assignees == {"users": [], "roles": ["approver", "admin", "owner"]}
    assert row.due_at is not None
    assert "What is the capital of France?" in row.context
    assert f"`{MINI}`: The capital of France is Paris." in row.context
    # The run is parked on the approval: no terminal event yet.
    await asyncio.sleep(0.3)
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    types = [e.type for e in await _events(sessions, handle.id)]
    assert "approval.requested" in types
    assert "run.completed" not in types

    await _decide(temporal_client, tenant, approval_id, Decision.approve)
    result = await handle.result()
    assert result.outcome is RunOutcome.completed
    (subtask,) = result.subtasks
    assert subtask.status is SubtaskStatus.completed
    assert subtask.consensus is not None
    assert subtask.consensus.reasons is not None
    assert "human review: approved by key:approver-1" in subtask.consensus.reasons
    assert result.answer is not None
    assert "Paris" in await read_text(sessions, tenant, result.answer)

    events = await _events(sessions, handle.id)
    by_type = {e.type: e.data for e in events}
    assert by_type["approval.requested"]["approval_id"] == approval_id
    assert by_type["approval.requested"]["approval_url"] == f"/v1/approvals/{approval_id}"
    assert by_type["approval.decided"]["outcome"] == "approve"
    assert by_type["approval.decided"]["actor"] == "key:approver-1"
    order = [e.type for e in events]
    assert order.index("consensus.reached") < order.index("approval.requested")
    assert order.index("approval.decided") < order.index("subtask.finished")
    assert order[-1] == "run.completed"


async def test_rejected_subtask_fails_and_the_run_continues_with_the_rest(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handle = await _start(temporal_client, tenant, task_queue, sessions, plan=two_facts_plan())
    capital, product = (review_approval_id(handle.id, s) for s in ("capital", "product"))
    await wait_row(sessions, tenant, capital)
    await wait_row(sessions, tenant, product)
    await _decide(temporal_client, tenant, capital, Decision.reject)
    await _decide(temporal_client, tenant, product, Decision.approve)
    result = await handle.result()
    by_id = {s.subtask_id: s for s in result.subtasks}
    assert by_id["capital"].status is SubtaskStatus.failed
    assert by_id["product"].status is SubtaskStatus.completed
    rejected = by_id["capital"].consensus
    assert rejected is not None
    assert rejected.error == "human review: reject by key:approver-1"
    # The synthesis used what the run has: only the approved subtask is cited.
    assert result.outcome is RunOutcome.completed
    assert result.answer is not None
    assert {c.subtask_id for c in result.citations} == {"product"}
    decided = [e.data for e in await _events(sessions, handle.id) if e.type == "approval.decided"]
    assert sorted(d["outcome"] for d in decided) == ["approve", "reject"]


async def test_rejecting_the_only_subtask_fails_the_outcome(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handle = await _start(temporal_client, tenant, task_queue, sessions, plan=CAPITAL_ONLY)
    approval_id = review_approval_id(handle.id, "capital")
    await wait_row(sessions, tenant, approval_id)
    await _decide(temporal_client, tenant, approval_id, Decision.reject)
    result = await handle.result()
    assert result.subtasks[0].status is SubtaskStatus.failed
    assert result.outcome is RunOutcome.failed
    assert result.answer is None


async def test_review_due_time_passing_counts_as_a_rejection(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handle = await _start(temporal_client, tenant, task_queue, sessions, plan=CAPITAL_ONLY, review_due_in_s=1)
    result = await handle.result()
    (subtask,) = result.subtasks
    assert subtask.status is SubtaskStatus.failed
    assert subtask.consensus is not None
    assert subtask.consensus.error == "human review: reject by timeout"
    decided = [e.data for e in await _events(sessions, handle.id) if e.type == "approval.decided"]
    assert decided == [
        {
            "subtask_id": "capital",
            "approval_id": review_approval_id(handle.id, "capital"),
            "status": "timed_out",
            "outcome": "reject",
            "actor": None,
        }
    ]


def test_approval_ids_stay_short_and_deterministic() -> None:
    long_run = "nexus:t-1:" + "k" * 240
    first = review_approval_id(long_run, "s" * 40)
    assert first == review_approval_id(long_run, "s" * 40)
    assert len(first) <= 100
    assert ":" not in first
    assert review_approval_id("nexus:t-1:abc:def", "capital") == "abc.def-capital"


async def test_cancelling_the_run_cancels_its_open_approval(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handle = await _start(temporal_client, tenant, task_queue, sessions, plan=CAPITAL_ONLY)
    approval_id = review_approval_id(handle.id, "capital")
    await wait_row(sessions, tenant, approval_id)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    for _ in range(100):
        stored = await row(sessions, tenant, approval_id)
        if stored is not None and stored.status == "cancelled":
            break
        await asyncio.sleep(0.05)
    assert stored is not None
    assert stored.status == "cancelled"
    assert (await _events(sessions, handle.id))[-1].type == "run.cancelled"
