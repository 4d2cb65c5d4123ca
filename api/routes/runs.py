"""``/v1/runs``: list, inspect, cancel any workflow run and stream its events (SSE)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.deps import PrincipalDep, RedisDep, SessionDep, StateDep, TemporalDep
from api.pagination import CursorQuery, LimitQuery
from core import events
from core.contracts import RunStatus
from core.db.models import Run
from core.errors import BadRequest, Conflict
from core.events import Event
from core.governance.audit import append
from core.identity import Permission
from core.runs import RunRepository, is_terminal, status_from_temporal

log = logging.getLogger("nexus.api.runs")
router = APIRouter(tags=["runs"])


class RunOut(BaseModel):
    """A run as listed."""

    id: str
    run_id: str | None
    kind: str
    status: str
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None
    cost_usd: float

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls(
            id=run.workflow_id,
            run_id=run.run_id,
            kind=run.kind,
            status=run.status,
            created_by=run.created_by,
            created_at=run.created_at,
            updated_at=run.updated_at,
            closed_at=run.closed_at,
            cost_usd=float(run.cost_usd),
        )


class EventOut(BaseModel):
    seq: int
    type: str
    data: dict[str, Any]
    created_at: str


class RunDetail(RunOut):
    """A run with its input summary, outcome and progress events."""

    input_summary: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    events: list[EventOut]
    cancel_requested: bool = False

    @classmethod
    def detail(cls, run: Run, run_events: list[Event], cancel_requested: bool = False) -> RunDetail:
        return cls(
            **RunOut.of(run).model_dump(),
            input_summary=run.input_summary,
            result=run.result,
            error=run.error,
            events=[
                EventOut(seq=e.seq, type=e.type, data=e.data, created_at=e.created_at) for e in run_events
            ],
            cancel_requested=cancel_requested,
        )


class RunPage(BaseModel):
    data: list[RunOut]
    next_cursor: str | None


async def refresh_status(repo: RunRepository, temporal: Client, run: Run) -> Run:
    """Refresh a non-final run's status from Temporal (covers terminate/timeout outside our code)."""
    if is_terminal(run.status):
        return run
    try:
        description = await temporal.get_workflow_handle(run.workflow_id).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return run
        raise
    status = status_from_temporal(description.status)
    # The workflow finishes its row itself (with result); only fill in closes it could not see.
    if status is not RunStatus.running and status.value != run.status and status is not RunStatus.completed:
        await repo.set_status(run.tenant_id, run.workflow_id, status)
        return await repo.get(run.tenant_id, run.workflow_id)
    return run


@router.get("/runs", response_model=RunPage)
async def list_runs(
    session: SessionDep,
    principal: PrincipalDep,
    kind: str | None = None,
    status: RunStatus | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> RunPage:
    """The tenant's runs, newest first, filtered by kind and status, cursor-paginated."""
    principal.require(Permission.runs_read)
    rows, next_cursor = await RunRepository.from_session(session).list(
        principal.tenant_id, kind=kind, status=status.value if status else None, limit=limit, cursor=cursor
    )
    return RunPage(data=[RunOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/runs/{run_id}", response_model=RunDetail)
async def get_run(
    run_id: str, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> RunDetail:
    """One run (``run_id`` is the workflow id, URL-encoded) with its events."""
    principal.require(Permission.runs_read)
    repo = RunRepository.from_session(session)
    run = await refresh_status(repo, temporal, await repo.get(principal.tenant_id, run_id))
    stored = await events.stored_events(session, tenant_id=principal.tenant_id, workflow_id=run.workflow_id)
    return RunDetail.detail(run, stored)


@router.post("/runs/{run_id}/cancel", response_model=RunDetail, status_code=202)
async def cancel_run(
    run_id: str, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> RunDetail:
    """Request cancellation; the workflow records ``run.cancelled`` when it has cleaned up."""
    principal.require(Permission.runs_write)
    repo = RunRepository.from_session(session)
    run = await refresh_status(repo, temporal, await repo.get(principal.tenant_id, run_id))
    stored = await events.stored_events(session, tenant_id=principal.tenant_id, workflow_id=run.workflow_id)
    if run.status == RunStatus.cancelled:
        return RunDetail.detail(run, stored)
    if is_terminal(run.status):
        raise Conflict(f"run is already {run.status}")
    try:
        await temporal.get_workflow_handle(run.workflow_id).cancel()
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
        raise Conflict("run is no longer running") from exc
    await append(
        session,
        actor=principal.actor,
        action="run.cancel",
        tenant_id=principal.tenant_id,
        target=run.workflow_id,
    )
    return RunDetail.detail(run, stored, cancel_requested=True)


@router.get("/runs/{run_id}/events", response_class=EventSourceResponse)
async def run_events(
    run_id: str,
    request: Request,
    state: StateDep,
    redis: RedisDep,
    principal: PrincipalDep,
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
) -> EventSourceResponse:
    """Server-Sent Events: stored events after ``Last-Event-ID``, then live ones until the run ends."""
    principal.require(Permission.runs_read)
    try:
        after = int(last_event_id) if last_event_id else 0
    except ValueError as exc:
        raise BadRequest("Last-Event-ID must be an integer") from exc
    tenant_id = principal.tenant_id
    # A short session for the ownership check: the stream must not hold a transaction open.
    async with state.sessions() as session:
        run = await RunRepository.from_session(session).get(tenant_id, run_id)
    workflow_id = run.workflow_id

    async def is_closed() -> bool:
        async with state.sessions() as s:
            current = await RunRepository.from_session(s).find(tenant_id, workflow_id)
        return current is None or is_terminal(current.status)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        async for event in events.follow(
            state.sessions,
            redis,
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            after_seq=after,
            is_closed=is_closed,
        ):
            if await request.is_disconnected():
                return
            yield {"id": str(event.seq), "event": event.type, "data": event.to_json()}

    return EventSourceResponse(stream(), ping=15)
