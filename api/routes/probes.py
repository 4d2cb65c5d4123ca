"""``/v1/probes``: start probe runs, manage probe schedules, read recent samples.

Clients cannot name HTTP targets: probing arbitrary URLs from inside the platform would be a
server-side request forgery primitive. HTTP targets come from operator configuration only
(the providers work will feed them into :class:`~core.contracts.ProbeInput`).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field, model_validator
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleSpec,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AppState, PrincipalDep, SessionDep, StateDep, TemporalDep
from api.routes.runs import RunDetail
from api.schemas import StrictModel
from core import events, probe
from core.contracts import (
    SA_CREATED_BY,
    SA_RUN_KIND,
    SA_TENANT_ID,
    HttpTarget,
    ProbeInput,
    RunKind,
    WorkflowName,
)
from core.errors import Conflict, NotFound, ValidationFailed
from core.governance.audit import append
from core.identity import Permission, Principal
from core.runs import RunRepository, key_from_idempotency, workflow_id

router = APIRouter(tags=["probes"])

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


class ProbeRunRequest(StrictModel):
    """What to probe. HTTP targets are the catalog's provider endpoints (operator config, never URLs
    from the client)."""

    check_postgres: bool = True
    check_redis: bool = True
    check_providers: bool = Field(True, description="Probe each configured LLM provider endpoint.")
    timeout_s: float = Field(5.0, gt=0, le=30)


class ScheduleRequest(ProbeRunRequest):
    """A recurring probe: exactly one of ``interval_s`` or ``cron``."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    interval_s: int | None = Field(None, ge=10, le=86_400 * 7)
    cron: str | None = Field(None, min_length=9, max_length=100)
    paused: bool = False

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleRequest:
        if (self.interval_s is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_s or cron")
        return self


class ScheduleOut(BaseModel):
    name: str
    id: str
    interval_s: int | None = None
    cron: str | None = None
    paused: bool = False
    next_action_times: list[dt.datetime] = []


class SampleOut(BaseModel):
    run_id: str
    target: str
    ok: bool
    latency_ms: float
    error: str | None
    created_at: dt.datetime


class SamplePage(BaseModel):
    data: list[SampleOut]


def _search_attributes(principal: Principal) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT_ID, principal.tenant_id),
            SearchAttributePair(SA_RUN_KIND, RunKind.probe.value),
            SearchAttributePair(SA_CREATED_BY, principal.actor),
        ]
    )


# Where each adapter's API answers a cheap GET (any non-5xx answer means "reachable").
_PROBE_PATHS = {"anthropic": "/v1/models"}


def provider_targets(state: AppState) -> list[HttpTarget]:
    """One target per configured provider endpoint of the catalog (real ones need their key set)."""
    if state.gateway is None:
        return []
    targets = []
    for name, entry in sorted(state.gateway.catalog.providers.items()):
        url = entry.base_url.rstrip("/") + _PROBE_PATHS.get(entry.adapter, "/models")
        targets.append(HttpTarget(name=f"provider.{name}", url=url))
    return targets


def _probe_input(body: ProbeRunRequest, principal: Principal, state: AppState) -> ProbeInput:
    return ProbeInput(
        tenant_id=principal.tenant_id,
        targets=provider_targets(state) if body.check_providers else [],
        check_postgres=body.check_postgres,
        check_redis=body.check_redis,
        timeout_s=body.timeout_s,
        created_by=principal.actor,
    )


@router.post("/probes/runs", response_model=RunDetail, status_code=202)
async def start_probe_run(
    body: ProbeRunRequest,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> RunDetail:
    """Start a Probe run. The same ``Idempotency-Key`` (per tenant) returns the same run."""
    principal.require(Permission.runs_write)
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ValidationFailed("Idempotency-Key must be 1-200 printable ASCII characters")
    repo = RunRepository.from_session(session)
    tenant = principal.tenant_id
    kind = RunKind.probe.value
    if idempotency_key is not None:
        existing = await repo.by_idempotency_key(tenant, kind, idempotency_key)
        if existing is not None:
            response.headers["Idempotent-Replayed"] = "true"
            stored = await events.stored_events(session, tenant_id=tenant, workflow_id=existing.workflow_id)
            return RunDetail.detail(existing, stored)
    run_key = key_from_idempotency(idempotency_key) if idempotency_key else uuid.uuid4().hex
    wid = workflow_id(kind, tenant, run_key)
    inp = _probe_input(body, principal, state)
    run, created = await repo.create(
        tenant_id=tenant,
        workflow_id=wid,
        kind=kind,
        created_by=principal.actor,
        idempotency_key=idempotency_key,
        input_summary=body.model_dump(),
    )
    if not created:  # a concurrent double submit inserted it first
        response.headers["Idempotent-Replayed"] = "true"
        return RunDetail.detail(run, [])
    handle = await _start(temporal, wid, inp, principal, state.settings.temporal.task_queue)
    await repo.set_run_id(tenant, wid, handle.result_run_id)
    await append(
        session, actor=principal.actor, action="run.start", tenant_id=tenant, target=wid, data={"kind": kind}
    )
    return RunDetail.detail(await repo.get(tenant, wid), [])


async def _start(
    temporal: Client, wid: str, inp: ProbeInput, principal: Principal, task_queue: str
) -> WorkflowHandle[Any, Any]:
    """Start once: a running twin is reused, a closed one is never restarted under the same id."""
    try:
        return await temporal.start_workflow(
            WorkflowName.probe.value,
            inp,
            id=wid,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=_search_attributes(principal),
            execution_timeout=dt.timedelta(minutes=10),
        )
    except WorkflowAlreadyStartedError:
        return temporal.get_workflow_handle(wid)


def _schedule_id(tenant_id: str, name: str) -> str:
    return f"probe:{tenant_id}:{name}"


@router.post("/probes/schedules", response_model=ScheduleOut, status_code=201)
async def create_schedule(
    body: ScheduleRequest,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
) -> ScheduleOut:
    """Run a probe every ``interval_s`` seconds or on a ``cron`` expression (UTC)."""
    principal.require(Permission.runs_write)
    sid = _schedule_id(principal.tenant_id, body.name)
    spec = (
        ScheduleSpec(intervals=[ScheduleIntervalSpec(every=dt.timedelta(seconds=body.interval_s))])
        if body.interval_s is not None
        else ScheduleSpec(cron_expressions=[body.cron or ""])
    )
    action = ScheduleActionStartWorkflow(
        WorkflowName.probe.value,
        _probe_input(body, principal, state),
        id=sid,
        task_queue=state.settings.temporal.task_queue,
        typed_search_attributes=_search_attributes(principal),
        execution_timeout=dt.timedelta(minutes=10),
    )
    schedule = Schedule(action=action, spec=spec)
    schedule.state.paused = body.paused
    try:
        await temporal.create_schedule(
            sid,
            schedule,
            memo={"name": body.name, "interval_s": body.interval_s, "cron": body.cron},
            search_attributes=_search_attributes(principal),
        )
    except ScheduleAlreadyRunningError as exc:
        raise Conflict(f"schedule {body.name!r} already exists") from exc
    except RPCError as exc:
        if exc.status is RPCStatusCode.INVALID_ARGUMENT:
            raise ValidationFailed("invalid schedule specification") from exc
        raise
    await append(
        session,
        actor=principal.actor,
        action="probe.schedule.create",
        tenant_id=principal.tenant_id,
        target=sid,
        data={"interval_s": body.interval_s, "cron": body.cron},
    )
    return ScheduleOut(name=body.name, id=sid, interval_s=body.interval_s, cron=body.cron, paused=body.paused)


@router.get("/probes/schedules", response_model=list[ScheduleOut])
async def list_schedules(principal: PrincipalDep, temporal: TemporalDep) -> list[ScheduleOut]:
    """The tenant's probe schedules (visibility is eventually consistent: a new one may lag)."""
    principal.require(Permission.runs_read)
    prefix = _schedule_id(principal.tenant_id, "")
    out: list[ScheduleOut] = []
    async for entry in await temporal.list_schedules():
        if not entry.id.startswith(prefix):
            continue
        memo = await entry.memo()
        out.append(
            ScheduleOut(
                name=entry.id[len(prefix) :],
                id=entry.id,
                interval_s=memo.get("interval_s"),
                cron=memo.get("cron"),
                paused=bool(entry.schedule and entry.schedule.state.paused),
                next_action_times=list(entry.info.next_action_times) if entry.info else [],
            )
        )
    return sorted(out, key=lambda s: s.name)


@router.delete("/probes/schedules/{name}", status_code=204)
async def delete_schedule(
    name: str, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> Response:
    """Delete one of the tenant's probe schedules (runs already started are kept)."""
    principal.require(Permission.runs_write)
    sid = _schedule_id(principal.tenant_id, name)
    try:
        await temporal.get_schedule_handle(sid).delete()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise NotFound("schedule not found") from exc
        raise
    await append(
        session,
        actor=principal.actor,
        action="probe.schedule.delete",
        tenant_id=principal.tenant_id,
        target=sid,
    )
    return Response(status_code=204)


@router.get("/probes/samples", response_model=SamplePage)
async def list_samples(
    session: SessionDep,
    principal: PrincipalDep,
    target: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> SamplePage:
    """The tenant's most recent probe samples, newest first."""
    principal.require(Permission.runs_read)
    rows = await probe.recent_samples(session, principal.tenant_id, target=target, limit=limit)
    return SamplePage(
        data=[
            SampleOut(
                run_id=r.workflow_id,
                target=r.target,
                ok=r.ok,
                latency_ms=float(r.latency_ms),
                error=r.error,
                created_at=r.created_at,
            )
            for r in rows
        ]
    )
