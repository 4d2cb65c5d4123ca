"""Approval activities: keep the ``approvals`` row in step with the workflow, and notify.

Every write is idempotent (insert-once, set-values, close-only-if-pending), so Temporal may
retry any of them after a crash without duplicating rows or audit events.
"""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.runs import RunActivities, require_own_workflow
from core.approvals.contracts import (
    EscalateApprovalInput,
    FinishApprovalInput,
    NotifyInput,
    RecordApprovalInput,
)
from core.approvals.notify import NotificationSettings, Notifier, NotifyConfigError
from core.approvals.store import ApprovalRepository


class ApprovalActivities(RunActivities):
    """Activities of the ``Approval`` workflow, bound to the worker's clients.

    ``publish_run_event`` and ``finish_run`` are inherited from :class:`RunActivities`; a worker
    that already registers them (via another activity class) must not register them twice.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        notifications: NotificationSettings,
    ) -> None:
        super().__init__(sessions, redis)
        self._notifier = Notifier(notifications)

    @activity.defn(name="record_approval")
    async def record_approval(self, inp: RecordApprovalInput) -> bool:
        """Insert the approval row once; returns whether this attempt inserted it."""
        require_own_workflow(inp.workflow_id, inp.request.tenant_id)
        async with self._sessions() as session, session.begin():
            return await ApprovalRepository.from_session(session).record(inp)

    @activity.defn(name="escalate_approval")
    async def escalate_approval(self, inp: EscalateApprovalInput) -> None:
        """Store the widened assignees and mark the row escalated."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self._sessions() as session, session.begin():
            await ApprovalRepository.from_session(session).escalate(
                inp.tenant_id, inp.approval_id, inp.assignees
            )

    @activity.defn(name="finish_approval")
    async def finish_approval(self, inp: FinishApprovalInput) -> bool:
        """Close the row and append the audit event (``approval.decide`` / ``approval.timeout``)
        in one transaction; a retry after commit changes nothing."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self._sessions() as session, session.begin():
            return await ApprovalRepository.from_session(session).finish(inp)

    @activity.defn(name="notify_approval")
    async def notify_approval(self, inp: NotifyInput) -> None:
        """Send one notification; transport errors propagate so Temporal retries the attempt."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        try:
            await self._notifier.send(inp)
        except NotifyConfigError as exc:
            raise ApplicationError(str(exc), type="NotifyConfigError", non_retryable=True) from exc
