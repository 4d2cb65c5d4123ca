"""Approval due times and escalation on the time-skipping test server (one environment per test)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from cli.embedded import venv_bin
from core.approvals.contracts import (
    UPDATE_DECIDE,
    ApprovalStatus,
    Assignees,
    Decision,
    DecisionRecord,
    Escalation,
    approval_workflow_id,
)
from tests.workflows.approval_support import approval_worker, audit_actions, decision, request, row
from workflows.approval import ApprovalWorkflow

DAY = 86_400


@pytest_asyncio.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=venv_bin("temporal-test-server")
    )
    yield environment
    await environment.shutdown()


@pytest.mark.parametrize("on_timeout", ["approve", "reject"])
async def test_timeout_applies_on_timeout_outcome(
    env: WorkflowEnvironment,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    on_timeout: str,
) -> None:
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    req = request(tenant, due_in_s=3 * DAY, on_timeout=on_timeout)
    async with approval_worker(env.client, sessions, redis_client, queue):
        result = await env.client.execute_workflow(
            ApprovalWorkflow.run,
            req,
            id=approval_workflow_id(tenant, req.approval_id),
            task_queue=queue,
        )
    assert result.status is ApprovalStatus.timed_out
    assert result.outcome is Decision(on_timeout)
    assert result.decision is None
    stored = await row(sessions, tenant, req.approval_id)
    assert stored is not None
    assert stored.status == "timed_out"
    assert stored.decision == {"on_timeout": on_timeout}
    assert stored.due_at is not None
    assert stored.due_at - stored.created_at == dt.timedelta(days=3)
    assert ("approval.timeout", "system:approval-timeout") in await audit_actions(sessions, tenant)


async def test_timeout_with_fail_fails_the_run(
    env: WorkflowEnvironment, tenant: str, sessions: async_sessionmaker[AsyncSession], redis_client: Redis
) -> None:
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    req = request(tenant, due_in_s=DAY, on_timeout="fail")
    async with approval_worker(env.client, sessions, redis_client, queue):
        with pytest.raises(WorkflowFailureError) as failure:
            await env.client.execute_workflow(
                ApprovalWorkflow.run,
                req,
                id=approval_workflow_id(tenant, req.approval_id),
                task_queue=queue,
            )
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ApprovalTimedOut"
    stored = await row(sessions, tenant, req.approval_id)
    assert stored is not None
    assert stored.status == "timed_out"


async def test_escalation_widens_assignees_then_times_out(
    env: WorkflowEnvironment, tenant: str, sessions: async_sessionmaker[AsyncSession], redis_client: Redis
) -> None:
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    req = request(
        tenant,
        assignees=Assignees(roles=["approver"]),
        due_in_s=3 * DAY,
        escalation=Escalation(after_s=DAY, to=Assignees(roles=["developer"], users=["Boss@Example.com"])),
    )
    async with approval_worker(env.client, sessions, redis_client, queue):
        result = await env.client.execute_workflow(
            ApprovalWorkflow.run,
            req,
            id=approval_workflow_id(tenant, req.approval_id),
            task_queue=queue,
        )
    assert result.escalated
    assert result.status is ApprovalStatus.timed_out
    assert result.outcome is Decision.reject
    stored = await row(sessions, tenant, req.approval_id)
    assert stored is not None
    assert stored.escalated
    assert stored.assignees == {"roles": ["approver", "developer"], "users": ["boss@example.com"]}


async def test_escalation_group_may_decide_after_escalation(
    env: WorkflowEnvironment, tenant: str, sessions: async_sessionmaker[AsyncSession], redis_client: Redis
) -> None:
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    req = request(
        tenant,
        assignees=Assignees(roles=["approver"]),
        due_in_s=3 * DAY,
        escalation=Escalation(after_s=DAY, to=Assignees(roles=["developer"])),
    )
    async with approval_worker(env.client, sessions, redis_client, queue):
        handle = await env.client.start_workflow(
            ApprovalWorkflow.run,
            req,
            id=approval_workflow_id(tenant, req.approval_id),
            task_queue=queue,
        )
        state = await handle.query(ApprovalWorkflow.state)
        assert not state.escalated
        await env.sleep(DAY + 60)
        state = await handle.query(ApprovalWorkflow.state)
        assert state.escalated
        assert state.assignees.roles == ["approver", "developer"]
        assert state.status is ApprovalStatus.pending
        record = await handle.execute_update(
            UPDATE_DECIDE, decision(tenant, role="developer", actor="key:dev"), result_type=DecisionRecord
        )
        assert record.actor == "key:dev"
        result = await handle.result()
    assert result.status is ApprovalStatus.approved
    assert result.escalated
