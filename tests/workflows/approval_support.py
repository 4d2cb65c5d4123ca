"""Helpers shared by the approval workflow tests."""

from __future__ import annotations

import uuid
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.approvals import ApprovalActivities
from core.approvals.contracts import ApprovalRequest, Assignees, DecideInput, Decision
from core.approvals.notify import NotificationSettings
from core.db.approval_models import Approval
from core.db.models import AuditEvent
from workflows.approval import ApprovalWorkflow


def request(tenant: str, **overrides: Any) -> ApprovalRequest:
    """A request assigned to the ``approver`` role and one named user, unless overridden."""
    fields: dict[str, Any] = {
        "tenant_id": tenant,
        "approval_id": uuid.uuid4().hex[:12],
        "title": "Send the quarterly letter",
        "context_markdown": "# Draft\n\nHello **customers**",
        "assignees": Assignees(roles=["approver"], users=["Alice@Example.com"]),
        "requested_by": "key:test",
    }
    fields.update(overrides)
    return ApprovalRequest(**fields)


def decision(
    tenant: str,
    *,
    role: str = "approver",
    decision: Decision = Decision.approve,
    decision_id: str | None = None,
    email: str | None = None,
    actor: str = "key:approver-1",
) -> DecideInput:
    return DecideInput(
        decision_id=decision_id or uuid.uuid4().hex,
        decision=decision,
        comment="looks good",
        actor=actor,
        actor_tenant_id=tenant,
        actor_role=role,
        actor_email=email,
    )


def approval_worker(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    task_queue: str,
    notifications: NotificationSettings | None = None,
) -> Worker:
    """Only the Approval workflow and its activities (incl. the shared run activities)."""
    acts = ApprovalActivities(sessions, redis, notifications or NotificationSettings())
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ApprovalWorkflow],
        activities=[
            acts.record_approval,
            acts.escalate_approval,
            acts.finish_approval,
            acts.notify_approval,
            acts.publish_run_event,
            acts.finish_run,
        ],
    )


async def row(sessions: async_sessionmaker[AsyncSession], tenant: str, approval_id: str) -> Approval | None:
    async with sessions() as s:
        return (
            await s.execute(select(Approval).where(Approval.tenant_id == tenant, Approval.id == approval_id))
        ).scalar_one_or_none()


async def audit_actions(sessions: async_sessionmaker[AsyncSession], tenant: str) -> list[tuple[str, str]]:
    async with sessions() as s:
        rows = await s.execute(
            select(AuditEvent.action, AuditEvent.actor)
            .where(AuditEvent.tenant_id == tenant)
            .order_by(AuditEvent.seq)
        )
        return [(a, b) for a, b in rows.all()]


async def wait_row(sessions: async_sessionmaker[AsyncSession], tenant: str, approval_id: str) -> Approval:
    """The approval row, once ``record_approval`` has stored it."""
    import asyncio

    for _ in range(200):
        found = await row(sessions, tenant, approval_id)
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("approval row never recorded")
