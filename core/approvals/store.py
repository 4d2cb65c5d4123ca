"""All SQL of the ``approvals`` table. Every query filters on ``tenant_id``.

The workflow's activities call :meth:`ApprovalRepository.record`, :meth:`escalate` and
:meth:`finish` (each idempotent); the API reads the inbox and single approvals.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.approvals.contracts import (
    OVERRIDE_ROLES,
    READ_ONLY_ROLES,
    ApprovalStatus,
    Assignees,
    FinishApprovalInput,
    RecordApprovalInput,
)
from core.approvals.rules import normalize_assignees
from core.db.approval_models import Approval
from core.db.models import User
from core.errors import NotFound
from core.governance.audit import append


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


async def user_aliases(session: AsyncSession, tenant_id: str, user_id: uuid.UUID | None) -> list[str]:
    """The id and e-mail of the user bound to a key (empty for keys without a user)."""
    if user_id is None:
        return []
    email = await session.scalar(select(User.email).where(User.tenant_id == tenant_id, User.id == user_id))
    return [str(user_id)] + ([email.lower()] if email else [])


class ApprovalRepository:
    """Tenant-scoped access to ``approvals``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> ApprovalRepository:
        return cls(session)

    async def record(self, inp: RecordApprovalInput) -> bool:
        """Insert the request once (a retry finds the row); returns whether it was inserted."""
        req = inp.request
        stmt = (
            insert(Approval)
            .values(
                tenant_id=req.tenant_id,
                id=req.approval_id,
                workflow_id=inp.workflow_id,
                parent_workflow_id=req.parent_workflow_id,
                title=req.title,
                context=req.context_markdown,
                assignees=normalize_assignees(req.assignees).model_dump(),
                status=ApprovalStatus.pending.value,
                on_timeout=req.on_timeout,
                requested_by=req.requested_by,
                due_at=_parse_time(inp.due_at),
                escalated=False,
                created_at=_parse_time(inp.created_at),
            )
            .on_conflict_do_nothing()
            .returning(Approval.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def escalate(self, tenant_id: str, approval_id: str, assignees: Assignees) -> None:
        """Store the widened assignees (setting the same values again is harmless)."""
        await self.session.execute(
            update(Approval)
            .where(Approval.tenant_id == tenant_id, Approval.id == approval_id)
            .values(assignees=normalize_assignees(assignees).model_dump(), escalated=True)
        )

    async def finish(self, inp: FinishApprovalInput) -> bool:
        """Close a pending row and append its audit event in the same transaction.

        Only a row still ``pending`` is changed, so a retry after commit writes no second audit
        event. Returns whether this call closed it.
        """
        decision = inp.decision.model_dump(mode="json") if inp.decision else None
        stored: dict[str, Any] | None = decision
        if inp.timeout_outcome is not None:
            stored = {"on_timeout": inp.timeout_outcome}
        closed = (
            await self.session.execute(
                update(Approval)
                .where(
                    Approval.tenant_id == inp.tenant_id,
                    Approval.id == inp.approval_id,
                    Approval.status == ApprovalStatus.pending.value,
                )
                .values(status=inp.status.value, decision=stored, decided_at=_parse_time(inp.decided_at))
                .returning(Approval.id)
            )
        ).scalar_one_or_none()
        if closed is None:
            return False
        if inp.decision is not None:
            await append(
                self.session,
                actor=inp.decision.actor,
                action="approval.decide",
                tenant_id=inp.tenant_id,
                target=inp.workflow_id,
                data={
                    "approval_id": inp.approval_id,
                    "decision": inp.decision.decision.value,
                    "decision_id": inp.decision.decision_id,
                    "comment": inp.decision.comment[:500],
                },
            )
        elif inp.timeout_outcome is None:
            await append(
                self.session,
                actor="system:approval-cancel",
                action="approval.cancel",
                tenant_id=inp.tenant_id,
                target=inp.workflow_id,
                data={"approval_id": inp.approval_id},
            )
        else:
            await append(
                self.session,
                actor="system:approval-timeout",
                action="approval.timeout",
                tenant_id=inp.tenant_id,
                target=inp.workflow_id,
                data={"approval_id": inp.approval_id, "on_timeout": inp.timeout_outcome},
            )
        return True

    async def find(self, tenant_id: str, approval_id: str) -> Approval | None:
        return (
            await self.session.execute(
                select(Approval)
                .where(Approval.tenant_id == tenant_id, Approval.id == approval_id)
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()

    async def get(self, tenant_id: str, approval_id: str) -> Approval:
        """The approval, or :class:`NotFound` (also for another tenant's)."""
        row = await self.find(tenant_id, approval_id)
        if row is None:
            raise NotFound("approval not found")
        return row

    async def inbox(
        self,
        tenant_id: str,
        *,
        role: str,
        aliases: list[str],
        status: str | None,
        limit: int = 50,
        after: tuple[dt.datetime, str] | None = None,
    ) -> tuple[list[Approval], tuple[dt.datetime, str] | None]:
        """Approvals the caller may decide (owners/admins: all of the tenant), newest first.

        Returns the page and the keyset position after it (``None`` on the last page).
        """
        query = select(Approval).where(Approval.tenant_id == tenant_id)
        if role not in OVERRIDE_ROLES:
            query = query.where(_assigned(role, aliases))
        if status:
            query = query.where(Approval.status == status)
        if after is not None:
            created, last_id = after
            query = query.where(
                or_(
                    Approval.created_at < created, and_(Approval.created_at == created, Approval.id < last_id)
                )
            )
        query = query.order_by(Approval.created_at.desc(), Approval.id.desc()).limit(limit + 1)
        rows = list((await self.session.execute(query)).scalars())
        if len(rows) > limit:
            rows = rows[:limit]
            return rows, (rows[-1].created_at, rows[-1].id)
        return rows, None


def _assigned(role: str, aliases: list[str]) -> ColumnElement[bool]:
    """SQL: the caller's role or one of its user aliases is among the assignees."""
    if role in READ_ONLY_ROLES:
        return false()
    terms = [Approval.assignees.contains({"roles": [role]})]
    for alias in aliases:
        terms.append(Approval.assignees.contains({"users": [alias]}))
    return or_(*terms)
