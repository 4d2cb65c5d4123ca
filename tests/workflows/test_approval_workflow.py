"""The Approval workflow on the dev server with the production worker wiring, Postgres and Valkey."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from core.approvals.client import send_decision
from core.approvals.contracts import (
    ApprovalRequest,
    ApprovalResult,
    ApprovalState,
    ApprovalStatus,
    Decision,
    DecisionRecord,
    approval_workflow_id,
)
from core.errors import Conflict, Forbidden, NotFound
from tests.workflows.approval_support import audit_actions, decision, request, row, wait_row
from workflows.approval import ApprovalWorkflow


async def _start(
    client: Client, req: ApprovalRequest, task_queue: str
) -> WorkflowHandle[ApprovalWorkflow, ApprovalResult]:
    return await client.start_workflow(
        ApprovalWorkflow.run,
        req,
        id=approval_workflow_id(req.tenant_id, req.approval_id),
        task_queue=task_queue,
    )


async def _pending(handle: WorkflowHandle[ApprovalWorkflow, ApprovalResult]) -> ApprovalState:
    for _ in range(100):
        state = await handle.query(ApprovalWorkflow.state)
        if state.status is ApprovalStatus.pending:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError("approval never became pending")


async def test_approve_completes_and_records_row_and_audit(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    req = request(tenant)
    handle = await _start(temporal_client, req, task_queue)
    await _pending(handle)
    stored = await wait_row(sessions, tenant, req.approval_id)
    assert stored.status == "pending"
    assert stored.assignees == {"users": ["alice@example.com"], "roles": ["approver"]}

    record = await send_decision(temporal_client, tenant, req.approval_id, decision(tenant))
    assert record.decision is Decision.approve
    # The update answers once the row is closed: no polling needed.
    stored = await row(sessions, tenant, req.approval_id)
    assert stored is not None
    assert stored.status == "approved"
    assert stored.decision is not None
    assert stored.decision["decision_id"] == record.decision_id
    assert stored.decided_at is not None

    result = await handle.result()
    assert result.status is ApprovalStatus.approved
    assert result.outcome is Decision.approve
    assert ("approval.decide", "key:approver-1") in await audit_actions(sessions, tenant)


async def test_repeated_decision_id_is_applied_once(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    req = request(tenant)
    handle = await _start(temporal_client, req, task_queue)
    inp = decision(tenant, decision=Decision.reject, decision_id="d-1")
    first, second = await asyncio.gather(
        send_decision(temporal_client, tenant, req.approval_id, inp),
        send_decision(temporal_client, tenant, req.approval_id, inp),
    )
    assert first == second
    assert isinstance(first, DecisionRecord)
    # A different decision afterwards is refused: the approval is no longer pending.
    with pytest.raises(Conflict):
        await send_decision(temporal_client, tenant, req.approval_id, decision(tenant))
    result = await handle.result()
    assert result.status is ApprovalStatus.rejected
    assert result.decision is not None
    assert result.decision.decision_id == "d-1"
    decides = [a for a, _ in await audit_actions(sessions, tenant) if a == "approval.decide"]
    assert decides == ["approval.decide"]


async def test_validator_refuses_viewer_other_tenant_and_non_assignee(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    req = request(tenant)
    handle = await _start(temporal_client, req, task_queue)
    with pytest.raises(Forbidden):
        # A viewer is refused even when its user is named.
        await send_decision(
            temporal_client,
            tenant,
            req.approval_id,
            decision(tenant, role="viewer", email="alice@example.com"),
        )
    with pytest.raises(Forbidden):
        await send_decision(temporal_client, tenant, req.approval_id, decision(tenant, role="developer"))
    with pytest.raises(NotFound):
        await send_decision(temporal_client, tenant, req.approval_id, decision("t-someone-else"))
    state = await _pending(handle)
    assert state.decision is None

    # A named user decides whatever its role (e-mail matched case-insensitively).
    named = decision(tenant, role="developer", email="ALICE@example.com", actor="key:alice")
    record = await send_decision(temporal_client, tenant, req.approval_id, named)
    assert record.actor == "key:alice"
    assert (await handle.result()).status is ApprovalStatus.approved


async def test_owner_may_always_decide_and_cancel_closes_the_row(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    owner_req = request(tenant, assignees={"roles": ["approver"]})
    await _start(temporal_client, owner_req, task_queue)
    changes = decision(tenant, role="owner", decision=Decision.request_changes, actor="key:owner")
    await send_decision(temporal_client, tenant, owner_req.approval_id, changes)
    stored = await row(sessions, tenant, owner_req.approval_id)
    assert stored is not None
    assert stored.status == "changes_requested"

    cancelled = request(tenant)
    handle = await _start(temporal_client, cancelled, task_queue)
    await _pending(handle)
    await handle.cancel()
    for _ in range(100):
        stored = await row(sessions, tenant, cancelled.approval_id)
        if stored is not None and stored.status == "cancelled":
            break
        await asyncio.sleep(0.05)
    assert stored is not None
    assert stored.status == "cancelled"
