"""``/v1/approvals``: the caller's inbox, one approval, decisions, and standalone approval runs.

Decisions go to the ``Approval`` workflow as a validated ``decide`` update; the workflow is the
authority on who may decide (its validator), the ``approvals`` table is the readable index.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.deps import PrincipalDep, SessionDep, StateDep, TemporalDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.schemas import StrictModel
from core.approvals.client import send_decision, start_approval
from core.approvals.contracts import (
    RUN_KIND,
    ApprovalRequest,
    ApprovalStatus,
    Assignees,
    DecideInput,
    Decision,
    Escalation,
    NotifyTarget,
    RecordApprovalInput,
    approval_workflow_id,
)
from core.approvals.notify import notification_settings
from core.approvals.rules import may_decide, may_view
from core.approvals.store import ApprovalRepository, user_aliases
from core.db.approval_models import Approval
from core.errors import BadRequest, Conflict, NotFound, ValidationFailed
from core.governance.audit import append
from core.identity import Permission, Principal
from core.runs import RunRepository, key_from_idempotency

router = APIRouter(tags=["approvals"])

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


class ApprovalCreate(StrictModel):
    """A standalone approval (pipelines and NEXUS runs start theirs as child workflows)."""

    title: str = Field(min_length=1, max_length=300)
    context_markdown: str = Field("", max_length=100_000)
    assignees: Assignees
    due_in_s: int | None = Field(None, gt=0, le=365 * 86_400)
    escalation: Escalation | None = None
    on_timeout: Literal["reject", "approve", "fail"] = "reject"
    notify: list[NotifyTarget] = Field(default_factory=list, max_length=10)


class DecisionBody(StrictModel):
    """A decision; ``decision_id`` makes a retried request apply once (default: a fresh uuid)."""

    decision: Decision
    comment: str = Field("", max_length=10_000)
    decision_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")


class ApprovalOut(BaseModel):
    """An approval as the inbox and detail views show it."""

    id: str
    workflow_id: str
    parent_workflow_id: str | None
    title: str
    context_markdown: str
    assignees: dict[str, Any]
    status: str
    on_timeout: str
    requested_by: str
    due_at: dt.datetime | None
    escalated: bool
    decision: dict[str, Any] | None
    created_at: dt.datetime
    decided_at: dt.datetime | None
    can_decide: bool = False

    @classmethod
    def of(cls, row: Approval, principal: Principal, aliases: list[str]) -> ApprovalOut:
        assignees = Assignees.model_validate(row.assignees)
        pending = row.status == ApprovalStatus.pending.value
        return cls(
            id=row.id,
            workflow_id=row.workflow_id,
            parent_workflow_id=row.parent_workflow_id,
            title=row.title,
            context_markdown=row.context,
            assignees=row.assignees,
            status=row.status,
            on_timeout=row.on_timeout,
            requested_by=row.requested_by,
            due_at=row.due_at,
            escalated=row.escalated,
            decision=row.decision,
            created_at=row.created_at,
            decided_at=row.decided_at,
            can_decide=pending
            and principal.can(Permission.approvals_decide)
            and may_decide(assignees, principal.role.value, aliases),
        )


class ApprovalPage(BaseModel):
    data: list[ApprovalOut]
    next_cursor: str | None


async def inbox(
    session: AsyncSession, principal: Principal, status: str | None, limit: int, cursor: str | None
) -> ApprovalPage:
    """The caller's approvals (shared by the API and the console)."""
    principal.require(Permission.runs_read)
    aliases = await user_aliases(session, principal.tenant_id, principal.user_id)
    after = None
    position = decode_cursor(cursor)
    if position is not None:
        try:
            after = (dt.datetime.fromisoformat(str(position[0])), str(position[1]))
        except (IndexError, ValueError) as exc:
            raise BadRequest("invalid cursor") from exc
    rows, last = await ApprovalRepository.from_session(session).inbox(
        principal.tenant_id,
        role=principal.role.value,
        aliases=aliases,
        status=status,
        limit=limit,
        after=after,
    )
    next_cursor = encode_cursor([last[0].isoformat(), last[1]]) if last else None
    return ApprovalPage(data=[ApprovalOut.of(r, principal, aliases) for r in rows], next_cursor=next_cursor)


async def visible(session: AsyncSession, principal: Principal, approval_id: str) -> ApprovalOut:
    """One approval the caller may see; anything else (incl. another tenant's) is 404."""
    principal.require(Permission.runs_read)
    row = await ApprovalRepository.from_session(session).get(principal.tenant_id, approval_id)
    aliases = await user_aliases(session, principal.tenant_id, principal.user_id)
    assignees = Assignees.model_validate(row.assignees)
    if not may_view(assignees, row.requested_by, principal.role.value, principal.actor, aliases):
        raise NotFound("approval not found")
    return ApprovalOut.of(row, principal, aliases)


async def decide(
    session: AsyncSession,
    principal: Principal,
    temporal: Client,
    approval_id: str,
    body: DecisionBody,
) -> ApprovalOut:
    """Send a decision for the caller and answer with the stored approval (shared with the console)."""
    principal.require(Permission.approvals_decide)
    repo = ApprovalRepository.from_session(session)
    row = await repo.get(principal.tenant_id, approval_id)
    aliases = await user_aliases(session, principal.tenant_id, principal.user_id)
    decision_id = body.decision_id or uuid.uuid4().hex
    if _already_applied(row, decision_id):
        return ApprovalOut.of(row, principal, aliases)
    emails = [a for a in aliases if "@" in a]
    inp = DecideInput(
        decision_id=decision_id,
        decision=body.decision,
        comment=body.comment,
        actor=principal.actor,
        actor_tenant_id=principal.tenant_id,
        actor_role=principal.role.value,
        actor_user=str(principal.user_id) if principal.user_id else None,
        actor_email=emails[0] if emails else None,
    )
    try:
        await send_decision(temporal, principal.tenant_id, approval_id, inp)
    except Conflict:
        row = await repo.get(principal.tenant_id, approval_id)
        if not _already_applied(row, decision_id):
            raise
    return ApprovalOut.of(await repo.get(principal.tenant_id, approval_id), principal, aliases)


def _already_applied(row: Approval, decision_id: str) -> bool:
    return bool(row.decision and row.decision.get("decision_id") == decision_id)


@router.get("/approvals", response_model=ApprovalPage)
async def list_approvals(
    session: SessionDep,
    principal: PrincipalDep,
    status: ApprovalStatus | None = Query(None, description="Filter, e.g. pending"),
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ApprovalPage:
    """The caller's inbox: approvals assigned to their role or user (owners/admins: all)."""
    return await inbox(session, principal, status.value if status else None, limit, cursor)


@router.get("/approvals/{approval_id}", response_model=ApprovalOut)
async def get_approval(approval_id: str, session: SessionDep, principal: PrincipalDep) -> ApprovalOut:
    """One approval with its context and decision."""
    return await visible(session, principal, approval_id)


@router.post("/approvals/{approval_id}/decision", response_model=ApprovalOut)
async def post_decision(
    approval_id: str, body: DecisionBody, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> ApprovalOut:
    """Approve, reject or request changes. Refusals: 403 (not an assignee, or a read-only
    role), 409 (no longer pending), 404 (unknown or another tenant's approval)."""
    return await decide(session, principal, temporal, approval_id, body)


@router.post("/approvals", response_model=ApprovalOut, status_code=202)
async def create_approval(
    body: ApprovalCreate,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> ApprovalOut:
    """Start a standalone approval run. The same ``Idempotency-Key`` (per tenant) returns it again."""
    principal.require(Permission.runs_write)
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ValidationFailed("Idempotency-Key must be 1-200 printable ASCII characters")
    channels = notification_settings(state.settings).channels
    unknown = sorted({t.channel for t in body.notify} - set(channels))
    if unknown:
        raise ValidationFailed(f"unknown notification channel(s): {', '.join(unknown)}")
    tenant = principal.tenant_id
    runs = RunRepository.from_session(session)
    approvals = ApprovalRepository.from_session(session)
    approval_id = key_from_idempotency(idempotency_key) if idempotency_key else uuid.uuid4().hex
    wid = approval_workflow_id(tenant, approval_id)
    run, created = await runs.create(
        tenant_id=tenant,
        workflow_id=wid,
        kind=RUN_KIND,
        created_by=principal.actor,
        idempotency_key=idempotency_key,
        input_summary={"approval_id": approval_id, "title": body.title},
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
        return await visible(session, principal, run.workflow_id.rsplit(":", 1)[1])
    req = ApprovalRequest(
        tenant_id=tenant,
        approval_id=approval_id,
        requested_by=principal.actor,
        **body.model_dump(),
    )
    now = dt.datetime.now(dt.UTC)
    due = now + dt.timedelta(seconds=req.due_in_s) if req.due_in_s else None
    # The row exists before the response, so the inbox shows it at once; the workflow's own
    # insert then finds it (insert-once).
    await approvals.record(
        RecordApprovalInput(
            request=req,
            workflow_id=wid,
            created_at=now.isoformat(),
            due_at=due.isoformat() if due else None,
        )
    )
    handle = await start_approval(temporal, req, state.settings.temporal.task_queue)
    await runs.set_run_id(tenant, wid, handle.result_run_id)
    await append(
        session,
        actor=principal.actor,
        action="approval.request",
        tenant_id=tenant,
        target=wid,
        data={"approval_id": approval_id, "title": body.title},
    )
    return await visible(session, principal, approval_id)
