"""``/v1/connector-jobs``: sync jobs (connection + object → sink) and their runs.

A job's runs are ``ConnectorSync`` workflows (kind ``connector_sync`` in ``/v1/runs``, progress
over ``/v1/runs/{id}/events``). Schedules (``PATCH``, ``/schedule/pause``, ``/unpause``) are in
``api/routes/connector_schedules``; deleting a job deletes its schedule. Only ids and counters
enter the workflow input, never credentials. Sinks: ``records`` (``GET /records``),
``knowledge_base`` (one document per record, ingested by ``IngestDocument``) and ``dataset``
(one eval dataset version per completed run).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.deps import PrincipalDep, SessionDep, StateDep, TemporalDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.routes.connector_schedules import (
    RUN_TIMEOUT,
    JobOut,
    ScheduleSpecIn,
    create_schedule,
    delete_schedule,
    sync_input,
)
from api.routes.runs import RunDetail
from api.run_start import start_once
from api.schemas import StrictModel
from connectors import registry
from connectors.base import ConnectorError
from connectors.jobs import JobRepository
from connectors.sinks import check_options
from connectors.store import ConnectionRepository, CredentialCipher
from core import events
from core.connector_contracts import RUN_KIND, WORKFLOW_NAME, SinkType
from core.contracts import RunStatus
from core.db.connector_models import ConnectorDocument, ConnectorRecord
from core.errors import Conflict, ValidationFailed
from core.governance.audit import append
from core.identity import Permission, Principal
from core.rag.store import RagRepository
from core.runs import RunRepository, key_from_idempotency, status_from_temporal, workflow_id

router = APIRouter(tags=["connector-jobs"])

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")

_DATASET_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class SinkSpec(StrictModel):
    type: SinkType = SinkType.records
    target: str = Field(
        "",
        max_length=200,
        description="knowledge_base: the knowledge base id or name; dataset: the dataset id (created "
        "when missing); records: empty.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="knowledge_base: {title, text, metadata} templates; dataset: {input, expected, "
        "contexts, tags, id} templates (sandboxed Jinja2 over record, external_id, object, modified_at).",
    )


class JobCreate(StrictModel):
    connection: str = Field(description="Connection id or name.")
    object: str = Field(min_length=1, max_length=100, description="One of the connector's sync_objects.")
    sink: SinkSpec = Field(default_factory=SinkSpec)
    page_size: int | None = Field(None, ge=1, le=10_000)
    max_pages_per_minute: int | None = Field(None, ge=1, le=6000, description="Pace reads (API limits).")
    schedule: ScheduleSpecIn | None = None


class JobPage(BaseModel):
    data: list[JobOut]
    next_cursor: str | None


class RecordOut(BaseModel):
    """One synced record (records/dataset sinks) or record → document link (knowledge_base sink)."""

    external_id: str
    modified_at: dt.datetime
    data: dict[str, Any] | None = None
    writes: int | None = None
    synced_at: dt.datetime | None = None
    document_id: str | None = None
    version: int | None = None
    sha256: str | None = None

    @classmethod
    def of_record(cls, row: ConnectorRecord) -> RecordOut:
        return cls(
            external_id=row.external_id,
            modified_at=row.modified_at,
            data=row.data,
            writes=row.writes,
            synced_at=row.synced_at,
        )

    @classmethod
    def of_link(cls, row: ConnectorDocument) -> RecordOut:
        return cls(
            external_id=row.external_id,
            modified_at=row.modified_at,
            document_id=str(row.document_id),
            version=row.version,
            sha256=row.sha256,
            synced_at=row.updated_at,
        )


class RecordPage(BaseModel):
    data: list[RecordOut]
    next_cursor: str | None


async def _sink_target(session: Any, principal: Principal, sink: SinkSpec) -> tuple[str, dict[str, Any]]:
    """The stored sink target (a knowledge base by id) and the validated options."""
    options = check_options(sink.type, sink.options)
    if sink.type is SinkType.knowledge_base:
        repo = RagRepository.from_session(session)
        kb = await repo.kb_by_name(principal.tenant_id, sink.target)
        if kb is None:
            kb = await repo.get_kb(principal.tenant_id, sink.target)  # NotFound for another tenant's
        return str(kb.id), options
    if sink.type is SinkType.dataset:
        if not _DATASET_SLUG.match(sink.target):
            raise ValidationFailed("the dataset sink needs a dataset id as its target ([a-z0-9][a-z0-9_.-]*)")
        return sink.target, options
    if sink.target:
        raise ValidationFailed("the records sink takes no target")
    return "", options


@router.post("/connector-jobs", response_model=JobOut, status_code=201)
async def create_job(
    body: JobCreate, session: SessionDep, principal: PrincipalDep, state: StateDep, temporal: TemporalDep
) -> JobOut:
    """Create a sync job (and its Temporal Schedule when ``schedule`` is given)."""
    principal.require(Permission.connections_manage)
    if body.schedule is not None and bool(body.schedule.cron) == bool(body.schedule.interval_s):
        raise ValidationFailed("a schedule needs exactly one of 'cron' or 'interval_s'")
    sink_target, sink_options = await _sink_target(session, principal, body.sink)
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
        sink_target=sink_target,
        sink_options=sink_options,
        page_size=body.page_size or state.settings.connectors.page_size,
        max_pages_per_minute=body.max_pages_per_minute,
        schedule=body.schedule.model_dump() if body.schedule else None,
        actor=principal.actor,
    )
    await session.refresh(job)
    if body.schedule is not None:
        await create_schedule(temporal, state, job, body.schedule, principal)
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
        await delete_schedule(temporal, principal.tenant_id, job_id)
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


@router.get("/connector-jobs/{job_id}/records", response_model=RecordPage)
async def list_job_records(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> RecordPage:
    """What the job's sink holds: the synced records (records and dataset sinks), or for the
    knowledge_base sink each record's document id and version. Oldest first."""
    principal.require(Permission.runs_read)
    repo = JobRepository(session)
    job = await repo.get(principal.tenant_id, job_id)
    after = decode_cursor(cursor)
    if job.sink_type == SinkType.knowledge_base.value:
        last = str(after[0]) if after else None
        links = await repo.documents_page(principal.tenant_id, job, limit=limit + 1, after=last)
        more = len(links) > limit
        links = links[:limit]
        nxt = encode_cursor([links[-1].external_id]) if more and links else None
        return RecordPage(data=[RecordOut.of_link(r) for r in links], next_cursor=nxt)
    return await records_page(repo, principal.tenant_id, job.connection_id, job.object, limit, after)


async def records_page(
    repo: JobRepository, tenant_id: str, connection_id: str, obj: str, limit: int, after: list[Any] | None
) -> RecordPage:
    """One page of ``connector_records`` of (connection, object), keyset on the row id."""
    if after is not None and (len(after) != 1 or not isinstance(after[0], int)):
        raise ValidationFailed("invalid cursor")
    rows = await repo.records_page(
        tenant_id, connection_id, obj, limit=limit + 1, after=after[0] if after else None
    )
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor([rows[-1].id]) if more and rows else None
    return RecordPage(data=[RecordOut.of_record(r) for r in rows], next_cursor=nxt)


async def _running(temporal: Client, wid: str) -> bool:
    try:
        description = await temporal.get_workflow_handle(wid).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return status_from_temporal(description.status) is RunStatus.running
