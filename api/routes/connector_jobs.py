"""``/v1/connector-jobs``: sync jobs (connection + object → sink), their runs and schedules.

A job's runs are ``ConnectorSync`` workflows (kind ``connector_sync`` in ``/v1/runs``, progress
over ``/v1/runs/{id}/events``). With a ``schedule`` the job gets a Temporal Schedule
``connector-schedule:{tenant}:{job}`` whose overlap policy defaults to ``skip``; deleting the
job deletes its schedule. Only ids and counters enter the workflow input, never credentials.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AppState, PrincipalDep, SessionDep, StateDep, TemporalDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.routes.runs import RunDetail
from api.run_start import start_once
from api.schemas import StrictModel
from connectors import registry
from connectors.base import ConnectorError
from connectors.jobs import JobRepository
from connectors.store import ConnectionRepository, CredentialCipher
from core import events
from core.connector_contracts import RUN_KIND, WORKFLOW_NAME, SinkType, SyncInput
from core.contracts import SA_CREATED_BY, SA_RUN_KIND, SA_TENANT_ID, RunStatus
from core.db.connector_models import ConnectorCheckpoint, ConnectorJob
from core.errors import Conflict, ValidationFailed
from core.governance.audit import append
from core.identity import Permission, Principal
from core.runs import RunRepository, key_from_idempotency, status_from_temporal, workflow_id

router = APIRouter(tags=["connector-jobs"])

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
RUN_TIMEOUT = dt.timedelta(days=7)
_OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
}


class SinkSpec(StrictModel):
    type: SinkType = SinkType.records
    target: str = Field("", max_length=200, description="Knowledge base id for the knowledge_base sink.")


class ScheduleSpecIn(StrictModel):
    cron: str | None = Field(None, max_length=200, description="Cron expression (UTC), e.g. '0 * * * *'.")
    interval_s: int | None = Field(None, ge=60, le=86400 * 31, description="Run every N seconds.")
    overlap: Literal["skip", "buffer_one", "cancel_other", "terminate_other"] = "skip"


class JobCreate(StrictModel):
    connection: str = Field(description="Connection id or name.")
    object: str = Field(min_length=1, max_length=100, description="One of the connector's sync_objects.")
    sink: SinkSpec = Field(default_factory=SinkSpec)
    page_size: int | None = Field(None, ge=1, le=10_000)
    max_pages_per_minute: int | None = Field(None, ge=1, le=6000, description="Pace reads (API limits).")
    schedule: ScheduleSpecIn | None = None


class JobOut(BaseModel):
    id: str
    connection_id: str
    object: str
    sink: dict[str, str]
    page_size: int
    max_pages_per_minute: int | None
    schedule: dict[str, Any] | None
    schedule_id: str | None
    status: str
    last_run_id: str | None
    last_error: str | None
    runs_started: int
    pages_done: int
    records_written: int
    checkpoint: dict[str, Any] | None
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, job: ConnectorJob, cp: ConnectorCheckpoint | None) -> JobOut:
        return cls(
            id=job.id,
            connection_id=job.connection_id,
            object=job.object,
            sink={"type": job.sink_type, "target": job.sink_target},
            page_size=job.page_size,
            max_pages_per_minute=job.max_pages_per_minute,
            schedule=job.schedule,
            schedule_id=schedule_id(job.tenant_id, job.id) if job.schedule else None,
            status=job.status,
            last_run_id=job.last_workflow_id,
            last_error=job.last_error,
            runs_started=job.runs_started,
            pages_done=cp.pages_done if cp else 0,
            records_written=cp.records_written if cp else 0,
            checkpoint=cp.checkpoint if cp else None,
            created_by=job.created_by,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )


class JobPage(BaseModel):
    data: list[JobOut]
    next_cursor: str | None


def schedule_id(tenant_id: str, job_id: str) -> str:
    """The Temporal Schedule id of a job."""
    return f"connector-schedule:{tenant_id}:{job_id}"


def sync_input(state: AppState, job: ConnectorJob, actor: str) -> SyncInput:
    """The workflow input of a job's run: ids and paging settings only."""
    return SyncInput(
        tenant_id=job.tenant_id,
        job_id=job.id,
        page_size=job.page_size,
        pages_per_run=state.settings.connectors.pages_per_run,
        max_pages_per_minute=job.max_pages_per_minute,
        page_timeout_s=state.settings.connectors.page_timeout_s,
        created_by=actor,
    )


def _attributes(principal: Principal) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT_ID, principal.tenant_id),
            SearchAttributePair(SA_RUN_KIND, RUN_KIND),
            SearchAttributePair(SA_CREATED_BY, principal.actor),
        ]
    )


async def _create_schedule(
    temporal: Client, state: AppState, job: ConnectorJob, spec: ScheduleSpecIn, principal: Principal
) -> None:
    if spec.cron:
        when = ScheduleSpec(cron_expressions=[spec.cron])
    else:
        assert spec.interval_s is not None
        when = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=dt.timedelta(seconds=spec.interval_s))])
    action = ScheduleActionStartWorkflow(
        WORKFLOW_NAME,
        sync_input(state, job, "schedule"),
        id=workflow_id(RUN_KIND, job.tenant_id, f"{job.id}.sched"),
        task_queue=state.settings.temporal.task_queue,
        execution_timeout=RUN_TIMEOUT,
        typed_search_attributes=_attributes(principal),
    )
    try:
        await temporal.create_schedule(
            schedule_id(job.tenant_id, job.id),
            Schedule(action=action, spec=when, policy=SchedulePolicy(overlap=_OVERLAP[spec.overlap])),
        )
    except RPCError as exc:
        if exc.status is RPCStatusCode.INVALID_ARGUMENT:
            raise ValidationFailed("the schedule was refused (check the cron expression)") from None
        raise


@router.post("/connector-jobs", response_model=JobOut, status_code=201)
async def create_job(
    body: JobCreate, session: SessionDep, principal: PrincipalDep, state: StateDep, temporal: TemporalDep
) -> JobOut:
    """Create a sync job (and its Temporal Schedule when ``schedule`` is given)."""
    principal.require(Permission.connections_manage)
    if body.schedule is not None and bool(body.schedule.cron) == bool(body.schedule.interval_s):
        raise ValidationFailed("a schedule needs exactly one of 'cron' or 'interval_s'")
    if body.sink.type is not SinkType.records:
        raise ValidationFailed(f"sink {body.sink.type.value!r} is not available yet")
    conn = await ConnectionRepository(session, CredentialCipher.from_settings(state.settings)).get(
        principal.tenant_id, body.connection
    )
    try:
        cls = registry.get(conn.type)
    except ConnectorError as exc:
        raise ValidationFailed(exc.message) from None
    if body.object not in cls.sync_objects:
        raise ValidationFailed(
            f"{conn.type} cannot sync {body.object!r} (supported: {', '.join(cls.sync_objects)})"
        )
    repo = JobRepository(session)
    job = await repo.create(
        tenant_id=principal.tenant_id,
        connection_id=conn.id,
        obj=body.object,
        sink_type=body.sink.type,
        sink_target=body.sink.target,
        page_size=body.page_size or state.settings.connectors.page_size,
        max_pages_per_minute=body.max_pages_per_minute,
        schedule=body.schedule.model_dump() if body.schedule else None,
        actor=principal.actor,
    )
    await session.refresh(job)
    if body.schedule is not None:
        await _create_schedule(temporal, state, job, body.schedule, principal)
    return JobOut.of(job, await repo.checkpoint(principal.tenant_id, job.id))


@router.get("/connector-jobs", response_model=JobPage)
async def list_jobs(
    session: SessionDep, principal: PrincipalDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> JobPage:
    """The tenant's sync jobs, newest first."""
    principal.require(Permission.runs_read)
    after = decode_cursor(cursor)
    key = (str(after[0]), str(after[1])) if after and len(after) == 2 else None
    repo = JobRepository(session)
    rows = await repo.page(principal.tenant_id, limit=limit + 1, after=key)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id])
    data = [JobOut.of(r, await repo.checkpoint(principal.tenant_id, r.id)) for r in rows]
    return JobPage(data=data, next_cursor=next_cursor)


@router.get("/connector-jobs/{job_id}", response_model=JobOut)
async def get_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> JobOut:
    """One job with its checkpoint, pages done and records written."""
    principal.require(Permission.runs_read)
    repo = JobRepository(session)
    job = await repo.get(principal.tenant_id, job_id)
    return JobOut.of(job, await repo.checkpoint(principal.tenant_id, job_id))


@router.delete("/connector-jobs/{job_id}", status_code=204)
async def delete_job(
    job_id: str, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> Response:
    """Delete a job that is not running, with its schedule and checkpoint (records stay)."""
    principal.require(Permission.connections_manage)
    job = await JobRepository(session).delete(principal.tenant_id, job_id, actor=principal.actor)
    if job.schedule:
        try:
            await temporal.get_schedule_handle(schedule_id(principal.tenant_id, job_id)).delete()
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
    return Response(status_code=204)


@router.post("/connector-jobs/{job_id}/runs", response_model=RunDetail, status_code=202)
async def start_job_run(
    job_id: str,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> RunDetail:
    """Start a sync run now (202). The same ``Idempotency-Key`` returns the same run; a job
    whose previous run is still running answers 409."""
    principal.require(Permission.runs_write)
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ValidationFailed("Idempotency-Key must be 1-200 printable ASCII characters")
    tenant = principal.tenant_id
    runs = RunRepository.from_session(session)
    if idempotency_key is not None:
        existing = await runs.by_idempotency_key(tenant, RUN_KIND, idempotency_key)
        if existing is not None:
            response.headers["Idempotent-Replayed"] = "true"
            stored = await events.stored_events(session, tenant_id=tenant, workflow_id=existing.workflow_id)
            return RunDetail.detail(existing, stored)
    job = await JobRepository(session).get(tenant, job_id)
    if job.status == "running" and job.last_workflow_id and await _running(temporal, job.last_workflow_id):
        raise Conflict("a sync of this job is running")
    run_key = key_from_idempotency(idempotency_key) if idempotency_key else uuid.uuid4().hex[:16]
    wid = workflow_id(RUN_KIND, tenant, f"{job.id}.{run_key}")
    async with state.sessions() as early, early.begin():
        run, created = await RunRepository.from_session(early).create(
            tenant_id=tenant,
            workflow_id=wid,
            kind=RUN_KIND,
            created_by=principal.actor,
            idempotency_key=idempotency_key,
            input_summary={"job": job.id, "connection": job.connection_id, "object": job.object},
        )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
        return RunDetail.detail(await runs.get(tenant, run.workflow_id), [])
    try:
        handle = await start_once(
            temporal,
            WORKFLOW_NAME,
            sync_input(state, job, principal.actor),
            workflow_id=wid,
            kind=RUN_KIND,
            principal=principal,
            task_queue=state.settings.temporal.task_queue,
            execution_timeout=RUN_TIMEOUT,
        )
    except Exception:
        async with state.sessions() as late, late.begin():
            await RunRepository.from_session(late).set_status(tenant, wid, RunStatus.failed)
        raise
    await runs.set_run_id(tenant, wid, handle.result_run_id)
    await append(
        session,
        actor=principal.actor,
        action="run.start",
        tenant_id=tenant,
        target=wid,
        data={"kind": RUN_KIND, "job": job.id},
    )
    return RunDetail.detail(await runs.get(tenant, wid), [])


@router.post("/connector-jobs/{job_id}/cancel", response_model=JobOut, status_code=202)
async def cancel_job_run(
    job_id: str, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> JobOut:
    """Request cancellation of the job's running sync (it stops after the page in flight)."""
    principal.require(Permission.runs_write)
    repo = JobRepository(session)
    job = await repo.get(principal.tenant_id, job_id)
    if job.last_workflow_id and await _running(temporal, job.last_workflow_id):
        await temporal.get_workflow_handle(job.last_workflow_id).cancel()
        await append(
            session,
            actor=principal.actor,
            action="run.cancel",
            tenant_id=principal.tenant_id,
            target=job.last_workflow_id,
            data={"kind": RUN_KIND, "job": job.id},
        )
    return JobOut.of(job, await repo.checkpoint(principal.tenant_id, job_id))


async def _running(temporal: Client, wid: str) -> bool:
    try:
        description = await temporal.get_workflow_handle(wid).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return status_from_temporal(description.status) is RunStatus.running
