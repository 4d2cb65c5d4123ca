"""``/v1/connector-jobs/{id}`` schedules: a job's Temporal Schedule and the job as answered.

With a ``schedule`` a job gets a Temporal Schedule ``connector-schedule:{tenant}:{job}`` whose
overlap policy defaults to ``skip``; ``PATCH /v1/connector-jobs/{id}`` replaces, adds or removes
it (``ScheduleHandle.update``), ``/schedule/pause`` and ``/unpause`` pause it. The scheduled
action starts ``ConnectorSync`` with ids and paging settings only, never credentials.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AppState, PrincipalDep, SessionDep, StateDep, TemporalDep
from api.schemas import StrictModel
from connectors.jobs import JobRepository
from core.connector_contracts import RUN_KIND, WORKFLOW_NAME, SyncInput
from core.contracts import SA_CREATED_BY, SA_RUN_KIND, SA_TENANT_ID
from core.db.connector_models import ConnectorCheckpoint, ConnectorJob
from core.errors import NotFound, ValidationFailed
from core.identity import Permission, Principal
from core.runs import workflow_id

router = APIRouter(tags=["connector-jobs"])

RUN_TIMEOUT = dt.timedelta(days=7)
_OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
}


class ScheduleSpecIn(StrictModel):
    cron: str | None = Field(None, max_length=200, description="Cron expression (UTC), e.g. '0 * * * *'.")
    interval_s: int | None = Field(None, ge=60, le=86400 * 31, description="Run every N seconds.")
    overlap: Literal["skip", "buffer_one", "cancel_other", "terminate_other"] = "skip"
    paused: bool = Field(False, description="Create (or keep) the schedule paused.")


class JobUpdate(StrictModel):
    schedule: ScheduleSpecIn | None = Field(
        None, description="The new schedule (replaces the old one); null removes the schedule."
    )


class JobOut(BaseModel):
    id: str
    connection_id: str
    object: str
    sink: dict[str, Any]
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
    records_skipped: int = Field(0, description="Records the sink left out (e.g. template errors).")
    skipped_by_kind: dict[str, int] = Field(
        default_factory=dict, description="records_skipped by kind (counts only, never record data)."
    )
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
            sink={"type": job.sink_type, "target": job.sink_target, "options": job.sink_options or {}},
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
            records_skipped=cp.records_skipped if cp else 0,
            skipped_by_kind=dict(cp.skipped or {}) if cp else {},
            checkpoint=cp.checkpoint if cp else None,
            created_by=job.created_by,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )


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


def job_attributes(principal: Principal) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT_ID, principal.tenant_id),
            SearchAttributePair(SA_RUN_KIND, RUN_KIND),
            SearchAttributePair(SA_CREATED_BY, principal.actor),
        ]
    )


def build_schedule(
    state: AppState, job: ConnectorJob, spec: ScheduleSpecIn, principal: Principal
) -> Schedule:
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
        typed_search_attributes=job_attributes(principal),
    )
    return Schedule(
        action=action,
        spec=when,
        policy=SchedulePolicy(overlap=_OVERLAP[spec.overlap]),
        state=ScheduleState(paused=spec.paused, note=f"connector job {job.id}"),
    )


def _refused(exc: RPCError) -> None:
    if exc.status is RPCStatusCode.INVALID_ARGUMENT:
        raise ValidationFailed("the schedule was refused (check the cron expression)") from None
    raise exc


async def create_schedule(
    temporal: Client, state: AppState, job: ConnectorJob, spec: ScheduleSpecIn, principal: Principal
) -> None:
    try:
        await temporal.create_schedule(
            schedule_id(job.tenant_id, job.id), build_schedule(state, job, spec, principal)
        )
    except RPCError as exc:
        _refused(exc)


@router.patch("/connector-jobs/{job_id}", response_model=JobOut)
async def update_job(
    job_id: str,
    body: JobUpdate,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
) -> JobOut:
    """Replace, add or remove (``"schedule": null``) the job's Temporal Schedule."""
    principal.require(Permission.connections_manage)
    repo = JobRepository(session)
    job = await repo.get(principal.tenant_id, job_id)
    if "schedule" not in body.model_fields_set:
        return JobOut.of(job, await repo.checkpoint(principal.tenant_id, job_id))
    spec = body.schedule
    if spec is not None and bool(spec.cron) == bool(spec.interval_s):
        raise ValidationFailed("a schedule needs exactly one of 'cron' or 'interval_s'")
    had = job.schedule is not None
    handle = temporal.get_schedule_handle(schedule_id(principal.tenant_id, job_id))
    job = await repo.set_schedule(
        principal.tenant_id,
        job_id,
        spec.model_dump() if spec else None,
        actor=principal.actor,
        action="schedule_update" if spec else "schedule_delete",
    )
    if spec is None:
        if had:
            await delete_schedule(temporal, principal.tenant_id, job_id)
    elif not had:
        await create_schedule(temporal, state, job, spec, principal)
    else:
        replacement = build_schedule(state, job, spec, principal)

        def updater(current: ScheduleUpdateInput) -> ScheduleUpdate:
            # the pause state is kept unless the request sets it
            paused = (
                spec.paused
                if "paused" in spec.model_fields_set
                else current.description.schedule.state.paused
            )
            replacement.state = ScheduleState(paused=paused, note=replacement.state.note)
            return ScheduleUpdate(schedule=replacement)

        try:
            await handle.update(updater)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:  # deleted behind our back: create it again
                await create_schedule(temporal, state, job, spec, principal)
            else:
                _refused(exc)
    await session.refresh(job)
    return JobOut.of(job, await repo.checkpoint(principal.tenant_id, job_id))


async def _pause(
    job_id: str, session: Any, principal: Principal, temporal: Client, *, paused: bool
) -> JobOut:
    principal.require(Permission.connections_manage)
    repo = JobRepository(session)
    job = await repo.get(principal.tenant_id, job_id)
    if not job.schedule:
        raise NotFound("the job has no schedule")
    handle = temporal.get_schedule_handle(schedule_id(principal.tenant_id, job_id))
    try:
        if paused:
            await handle.pause(note=f"paused by {principal.actor}")
        else:
            await handle.unpause(note=f"unpaused by {principal.actor}")
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise NotFound("the job's schedule does not exist") from None
        raise
    job = await repo.set_schedule(
        principal.tenant_id,
        job_id,
        {**job.schedule, "paused": paused},
        actor=principal.actor,
        action="schedule_pause" if paused else "schedule_unpause",
    )
    await session.refresh(job)
    return JobOut.of(job, await repo.checkpoint(principal.tenant_id, job_id))


@router.post("/connector-jobs/{job_id}/schedule/pause", response_model=JobOut)
async def pause_job_schedule(
    job_id: str, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> JobOut:
    """Pause the job's schedule (no scheduled runs start; manual runs still can)."""
    return await _pause(job_id, session, principal, temporal, paused=True)


@router.post("/connector-jobs/{job_id}/schedule/unpause", response_model=JobOut)
async def unpause_job_schedule(
    job_id: str, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> JobOut:
    """Resume the job's paused schedule."""
    return await _pause(job_id, session, principal, temporal, paused=False)


async def delete_schedule(temporal: Client, tenant_id: str, job_id: str) -> None:
    try:
        await temporal.get_schedule_handle(schedule_id(tenant_id, job_id)).delete()
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
