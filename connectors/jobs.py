"""Connector jobs: their repository and the per-page commit of a sync.

A page is committed in **one transaction**: the sink write of its records, the checkpoint
advance (compare-and-set on ``pages_done`` and on the owning workflow id) and the page's
progress event. A crash before the commit leaves nothing; a retry after it finds
``pages_done`` already advanced by the same workflow and returns the stored outcome without
reading the source again. The records sink upserts on ``UNIQUE (tenant, connection, object,
external_id)`` keeping the latest ``modified_at``, so a page read twice still leaves each
record once. The sinks live in ``connectors.sinks_records`` (the protocol and the records
table), ``connectors.sinks_kb`` and ``connectors.sinks_dataset``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.base import SyncPage
from connectors.sinks_records import RecordsSink, Sink, SinkContext
from core import events
from core.connector_contracts import SinkType, SyncEvent
from core.db.connector_models import (
    ConnectorCheckpoint,
    ConnectorDocument,
    ConnectorJob,
    ConnectorRecord,
    ConnectorRecordJob,
)
from core.errors import Conflict, NotFound, ValidationFailed
from core.governance.audit import append

__all__ = [
    "JobRepository",
    "PageOutcome",
    "RecordsSink",
    "Sink",
    "SinkContext",
    "SyncSuperseded",
    "skipped_by_kind",
    "validate_schedule",
]


class SyncSuperseded(Exception):
    """The job's checkpoint is owned by another run or moved in a way this run did not make."""


@dataclass(frozen=True)
class PageOutcome:
    """What a committed page did (also what an idempotent retry returns)."""

    pages_done: int
    records: int
    has_more: bool
    replayed: bool
    event: events.Event | None = None


def skipped_by_kind(drafts: list[Any] | None) -> dict[str, int]:
    """How many of a page's prepared documents the sink leaves out, by kind (counts only)."""
    counts: dict[str, int] = {}
    for draft in drafts or []:
        kind = getattr(draft, "skip_kind", None)
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


class JobRepository:
    """Tenant-scoped SQL of ``connector_jobs`` and ``connector_checkpoints``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self,
        *,
        tenant_id: str,
        connection_id: str,
        obj: str,
        sink_type: SinkType,
        sink_target: str,
        page_size: int,
        max_pages_per_minute: int | None,
        schedule: dict[str, Any] | None,
        actor: str,
        job_id: str | None = None,
        sink_options: dict[str, Any] | None = None,
    ) -> ConnectorJob:
        """Insert a job and its empty checkpoint; audited as ``connector_job.create``."""
        job = ConnectorJob(
            tenant_id=tenant_id,
            id=job_id or "job_" + uuid.uuid4().hex[:20],
            connection_id=connection_id,
            object=obj,
            sink_type=sink_type.value,
            sink_target=sink_target,
            sink_options=sink_options or {},
            page_size=page_size,
            max_pages_per_minute=max_pages_per_minute,
            schedule=schedule,
            status="idle",
            runs_started=0,
            created_by=actor,
        )
        self.session.add(job)
        await self.session.flush()
        self.session.add(
            ConnectorCheckpoint(
                tenant_id=tenant_id,
                job_id=job.id,
                checkpoint=None,
                pages_done=0,
                records_written=0,
                has_more=True,
                last_page_records=0,
            )
        )
        await self.session.flush()
        await append(
            self.session,
            actor=actor,
            action="connector_job.create",
            tenant_id=tenant_id,
            target=job.id,
            data={"connection": connection_id, "object": obj, "sink": sink_type.value, "schedule": schedule},
        )
        return job

    async def get(self, tenant_id: str, job_id: str) -> ConnectorJob:
        """The job or :class:`NotFound` (also for another tenant's)."""
        job = (
            await self.session.execute(
                select(ConnectorJob)
                .where(ConnectorJob.tenant_id == tenant_id, ConnectorJob.id == job_id)
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if job is None:
            raise NotFound("connector job not found")
        return job

    async def checkpoint(self, tenant_id: str, job_id: str, *, lock: bool = False) -> ConnectorCheckpoint:
        """The job's checkpoint row (``FOR UPDATE`` with ``lock``)."""
        query = (
            select(ConnectorCheckpoint)
            .where(ConnectorCheckpoint.tenant_id == tenant_id, ConnectorCheckpoint.job_id == job_id)
            .execution_options(populate_existing=True)
        )
        if lock:
            query = query.with_for_update()
        row = (await self.session.execute(query)).scalar_one_or_none()
        if row is None:
            raise NotFound("connector job not found")
        return row

    async def page(
        self, tenant_id: str, *, limit: int, after: tuple[str, str] | None = None
    ) -> list[ConnectorJob]:
        """Newest first; ``after`` is (created_at iso, id) of the last row seen."""
        query = select(ConnectorJob).where(ConnectorJob.tenant_id == tenant_id)
        if after is not None:
            created = dt.datetime.fromisoformat(after[0])
            query = query.where(
                or_(
                    ConnectorJob.created_at < created,
                    and_(ConnectorJob.created_at == created, ConnectorJob.id < after[1]),
                )
            )
        query = query.order_by(ConnectorJob.created_at.desc(), ConnectorJob.id.desc()).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def delete(self, tenant_id: str, job_id: str, *, actor: str) -> ConnectorJob:
        """Delete a job that is not running, with its checkpoint (synced records stay)."""
        job = await self.get(tenant_id, job_id)
        if job.status == "running":
            raise Conflict("the job is running; cancel its run first")
        cp = await self.checkpoint(tenant_id, job_id)
        await self.session.delete(cp)
        await self.session.execute(
            delete(ConnectorRecordJob).where(
                ConnectorRecordJob.tenant_id == tenant_id, ConnectorRecordJob.job_id == job_id
            )
        )
        await self.session.flush()
        await self.session.delete(job)
        await self.session.flush()
        await append(
            self.session, actor=actor, action="connector_job.delete", tenant_id=tenant_id, target=job_id
        )
        return job

    async def record_count(self, tenant_id: str, job: ConnectorJob) -> int:
        """Rows the records sink holds for the job's (connection, object)."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(ConnectorRecord)
            .where(
                ConnectorRecord.tenant_id == tenant_id,
                ConnectorRecord.connection_id == job.connection_id,
                ConnectorRecord.object == job.object,
            )
        )
        return int(count or 0)

    async def records_page(
        self, tenant_id: str, connection_id: str, obj: str, *, limit: int, after: int | None = None
    ) -> list[ConnectorRecord]:
        """Synced rows of (connection, object) in insertion order; ``after`` is the last row id."""
        query = select(ConnectorRecord).where(
            ConnectorRecord.tenant_id == tenant_id,
            ConnectorRecord.connection_id == connection_id,
            ConnectorRecord.object == obj,
        )
        if after is not None:
            query = query.where(ConnectorRecord.id > after)
        query = query.order_by(ConnectorRecord.id).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def documents_page(
        self, tenant_id: str, job: ConnectorJob, *, limit: int, after: str | None = None
    ) -> list[ConnectorDocument]:
        """The knowledge-base sink's record → document links of the job's (connection, object)."""
        query = select(ConnectorDocument).where(
            ConnectorDocument.tenant_id == tenant_id,
            ConnectorDocument.connection_id == job.connection_id,
            ConnectorDocument.object == job.object,
            ConnectorDocument.kb_id == uuid.UUID(job.sink_target),
        )
        if after is not None:
            query = query.where(ConnectorDocument.external_id > after)
        query = query.order_by(ConnectorDocument.external_id).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def set_schedule(
        self, tenant_id: str, job_id: str, schedule: dict[str, Any] | None, *, actor: str, action: str
    ) -> ConnectorJob:
        """Store a job's schedule (``None`` removes it); audited as ``connector_job.<action>``."""
        job = await self.get(tenant_id, job_id)
        job.schedule = schedule
        job.updated_at = dt.datetime.now(dt.UTC)
        await self.session.flush()
        await append(
            self.session,
            actor=actor,
            action=f"connector_job.{action}",
            tenant_id=tenant_id,
            target=job_id,
            data={"schedule": schedule},
        )
        return job

    async def begin(self, tenant_id: str, job_id: str, workflow_id: str) -> ConnectorCheckpoint:
        """Make ``workflow_id`` the job's running sync (idempotent for the same workflow).

        A finished earlier sync (``has_more`` false) is re-opened: incremental sync continues
        from its checkpoint and reads only what changed since.
        """
        job = await self.get(tenant_id, job_id)
        cp = await self.checkpoint(tenant_id, job_id, lock=True)
        if cp.owner_workflow_id != workflow_id:
            cp.owner_workflow_id = workflow_id
            cp.has_more = True
            job.runs_started += 1
        job.status = "running"
        job.last_workflow_id = workflow_id
        job.last_error = None
        job.updated_at = dt.datetime.now(dt.UTC)
        await self.session.flush()
        return cp

    async def commit_page(
        self,
        *,
        job: ConnectorJob,
        workflow_id: str,
        expected_pages: int,
        page: SyncPage,
        sink: Sink,
        seq: int,
        drafts: list[Any] | None = None,
    ) -> PageOutcome:
        """Sink write + checkpoint advance + progress event, in the caller's transaction."""
        cp = await self.checkpoint(job.tenant_id, job.id, lock=True)
        replay = self.replayed(cp, workflow_id, expected_pages)
        if replay is not None:
            return replay
        ctx = SinkContext(workflow_id=workflow_id, page=expected_pages + 1, drafts=drafts)
        written = await sink.write(self.session, job, page.records, ctx)
        skipped = skipped_by_kind(drafts)
        cp.checkpoint = page.checkpoint if page.checkpoint is not None else cp.checkpoint
        cp.pages_done = expected_pages + 1
        cp.records_written = cp.records_written + written
        cp.has_more = page.has_more
        cp.last_page_records = written
        if skipped:
            cp.records_skipped = (cp.records_skipped or 0) + sum(skipped.values())
            totals = dict(cp.skipped or {})
            for kind, n in skipped.items():
                totals[kind] = int(totals.get(kind, 0)) + n
            cp.skipped = totals  # a new dict: JSONB columns track assignment, not mutation
        cp.updated_at = dt.datetime.now(dt.UTC)
        await self.session.flush()
        event = await events.store(
            self.session,
            tenant_id=job.tenant_id,
            workflow_id=workflow_id,
            type=SyncEvent.page,
            data={
                "job": job.id,
                "page": cp.pages_done,
                "records": written,
                "records_total": cp.records_written,
                "has_more": page.has_more,
                "skipped": sum(skipped.values()),
                "skipped_by_kind": skipped,
            },
            seq=seq,
        )
        return PageOutcome(cp.pages_done, written, page.has_more, False, event)

    @staticmethod
    def replayed(cp: ConnectorCheckpoint, workflow_id: str, expected_pages: int) -> PageOutcome | None:
        """The stored outcome when this workflow already committed the page, else None.

        Raises :class:`SyncSuperseded` when another run owns the job or the checkpoint moved.
        """
        if cp.owner_workflow_id != workflow_id:
            raise SyncSuperseded("another run of this job owns its checkpoint")
        if cp.pages_done == expected_pages + 1:
            return PageOutcome(cp.pages_done, cp.last_page_records, cp.has_more, True)
        if cp.pages_done != expected_pages:
            raise SyncSuperseded("the job's checkpoint moved outside this run")
        if not cp.has_more:
            return PageOutcome(cp.pages_done, 0, False, True)
        return None

    async def finish(
        self, tenant_id: str, job_id: str, workflow_id: str, *, status: str, error: str | None
    ) -> None:
        """Record how the job's run ended (only if it is still the job's latest run)."""
        await self.session.execute(
            update(ConnectorJob)
            .where(
                ConnectorJob.tenant_id == tenant_id,
                ConnectorJob.id == job_id,
                ConnectorJob.last_workflow_id == workflow_id,
            )
            .values(status=status, last_error=(error or None) and error[:500], updated_at=func.now())
        )


def validate_schedule(schedule: dict[str, Any] | None) -> dict[str, Any] | None:
    """Check a ``{cron | interval_s, overlap}`` schedule (the API model validated the shape)."""
    if schedule is None:
        return None
    if bool(schedule.get("cron")) == bool(schedule.get("interval_s")):
        raise ValidationFailed("a schedule needs exactly one of 'cron' or 'interval_s'")
    return schedule
