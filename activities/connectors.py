"""Connector activities: sync pages of ``ConnectorSync`` and ``connector`` steps of pipelines.

Credentials never travel through Temporal: each activity loads the connection by id and
decrypts its credentials itself. Connector failures map to Temporal retries by their kind:
throttling, unavailability and timeouts retry (throttling after the vendor's ``Retry-After``,
as ``next_retry_delay``); auth, permission, validation, config and not-installed fail fast.

Blocking connectors (Salesforce) run in the ``*_blocking`` variants: plain ``def`` activities
on the worker's thread pool. Their database work is submitted to the worker's event loop, so
one async engine serves both kinds.

The sync activities live here; :class:`ConnectorActivities` inherits the pipeline step
activities (``activities/connector_actions``) and the shared plumbing
(``activities/connector_base``), so the worker registers all of them from one instance.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client

from activities.connector_actions import ConnectorActionActivities
from activities.connector_base import connector_failure, fatal
from activities.connector_sinks import (
    snapshot_dataset,
    start_ingestions,
    start_previous_owner_ingestions,
    start_unacknowledged_ingestions,
)
from activities.pipeline_steps import PipelineActivities
from activities.runs import require_own_workflow
from connectors import registry
from connectors.base import Connector, ConnectorError, SyncPage, SyncRecord
from connectors.jobs import JobRepository, PageOutcome, RecordsSink, Sink, SyncSuperseded
from connectors.sinks_dataset import DatasetSink
from connectors.sinks_kb import DocumentDraft, FileFetch, KnowledgeBaseSink, file_download
from connectors.store import ConnectionRepository
from core import events
from core.config import Settings
from core.connector_contracts import (
    RUN_KIND,
    BeginInput,
    BeginResult,
    FinishInput,
    PageInput,
    PageResult,
    SinkType,
    SnapshotInput,
    SnapshotResult,
    SyncEvent,
)
from core.contracts import RunStatus
from core.db.connector_models import Connection, ConnectorJob
from core.errors import NexusError
from core.rag.settings import rag_settings
from core.runs import RunRepository


@dataclass
class _Prepared:
    job: ConnectorJob
    connection: Connection | None
    credentials: dict[str, Any]
    checkpoint: dict[str, Any] | None
    done: PageOutcome | None


class ConnectorActivities(ConnectorActionActivities):
    """Sync and action activities, bound to the worker's database, Redis and settings."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        settings: Settings,
        pipelines: PipelineActivities | None = None,
        temporal: Client | None = None,
    ) -> None:
        super().__init__(sessions, redis, settings, pipelines, temporal)
        self.sinks: dict[str, Sink] = {
            SinkType.records.value: RecordsSink(),
            SinkType.dataset.value: DatasetSink(),
        }
        self.kb_sink = KnowledgeBaseSink(rag_settings(settings).max_upload_bytes)
        if temporal is not None:  # documents are ingested by workflows this client starts
            self.sinks[SinkType.knowledge_base.value] = self.kb_sink

    # --- sync ---------------------------------------------------------------------------

    @activity.defn(name="connector_sync_begin")
    async def connector_sync_begin(self, inp: BeginInput) -> BeginResult:
        """Claim the job for this run, make sure its runs row exists and publish ``run.started``
        (first starting the ingestions the previous run may have lost on its last page)."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        if self.temporal is not None:  # before taking the job over (see the function)
            await start_previous_owner_ingestions(
                self.sessions, self.temporal, self.settings, inp.tenant_id, inp.job_id, inp.workflow_id
            )
        async with self.sessions() as session, session.begin():
            repo = JobRepository(session)
            try:
                job = await repo.get(inp.tenant_id, inp.job_id)
            except NexusError as exc:
                raise fatal(exc.detail, "NotFound") from None
            cp = await repo.begin(inp.tenant_id, inp.job_id, inp.workflow_id)
            conn = await ConnectionRepository(session, self.cipher).get(inp.tenant_id, job.connection_id)
            await RunRepository.from_session(session).create(
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                kind=RUN_KIND,
                created_by=inp.created_by or "schedule",
                input_summary={"job": job.id, "connection": job.connection_id, "object": job.object},
            )
            event = await events.store(
                session,
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                type=SyncEvent.started,
                data={"job": job.id, "object": job.object, "pages_done": cp.pages_done},
                seq=inp.seq,
            )
            try:
                blocking = registry.get(conn.type).blocking
            except ConnectorError as exc:
                raise connector_failure(exc) from None
            result = BeginResult(pages_done=cp.pages_done, blocking=blocking, sink=job.sink_type)
        await events.announce(self.redis, inp.workflow_id, event)
        return result

    async def _prepare_page(self, inp: PageInput) -> _Prepared:
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self.sessions() as session:
            repo = JobRepository(session)
            try:
                job = await repo.get(inp.tenant_id, inp.job_id)
                cp = await repo.checkpoint(inp.tenant_id, inp.job_id)
                done = repo.replayed(cp, inp.workflow_id, inp.expected_pages)
            except NexusError as exc:
                raise fatal(exc.detail, "NotFound") from None
            except SyncSuperseded as exc:
                raise fatal(str(exc), "SyncSuperseded") from None
            checkpoint = cp.checkpoint
        if job.sink_type not in self.sinks:
            raise fatal(f"sink {job.sink_type!r} is not available on this worker", "SinkNotAvailable")
        if done is not None:
            return _Prepared(job, None, {}, checkpoint, done)
        row, credentials = await self._connection(inp.tenant_id, job.connection_id)
        return _Prepared(job, row, credentials, checkpoint, None)

    async def _drafts(
        self, job: ConnectorJob, row: Connection, page: SyncPage, connector: Connector | None
    ) -> list[DocumentDraft] | None:
        """The knowledge-base sink's documents of a page, rendered or downloaded before its commit."""
        if job.sink_type != SinkType.knowledge_base.value:
            return None
        fetch: FileFetch | None = None
        if connector is not None and not connector.blocking:
            live = connector

            async def download(record: SyncRecord) -> tuple[bytes, str]:
                payload = file_download(row.type, job.object, record) or {}
                if not payload.get("drive_id"):
                    payload["drive_id"] = getattr(live.config, "drive_id", None) or ""
                key = f"{job.id}:{record.external_id}:{record.modified_at.isoformat()}"
                out = await live.run_action("download_file", payload, key)
                return base64.b64decode(out["content_base64"]), str(out.get("content_type", ""))

            fetch = download

        try:
            return await self.kb_sink.prepare(job, row.type, page.records, fetch)
        except ConnectorError as exc:
            raise connector_failure(exc) from None

    async def _commit_page(
        self, inp: PageInput, job: ConnectorJob, page: SyncPage, drafts: list[DocumentDraft] | None = None
    ) -> PageResult:
        try:
            async with self.sessions() as session, session.begin():
                outcome = await JobRepository(session).commit_page(
                    job=job,
                    workflow_id=inp.workflow_id,
                    expected_pages=inp.expected_pages,
                    page=page,
                    sink=self.sinks[job.sink_type],
                    seq=inp.seq,
                    drafts=list(drafts) if drafts is not None else None,
                )
        except SyncSuperseded as exc:
            raise fatal(str(exc), "SyncSuperseded") from None
        except NexusError as exc:  # the sink's target is gone (e.g. the knowledge base was deleted)
            raise fatal(exc.detail, "SinkUnavailable") from None
        if outcome.event is not None:
            await events.announce(self.redis, inp.workflow_id, outcome.event)
        return await self._after_page(inp, job, outcome)

    async def _after_page(self, inp: PageInput, job: ConnectorJob, outcome: PageOutcome) -> PageResult:
        """Start the ingestions of a committed page (again on a retry: the starts are idempotent)."""
        result = _result(outcome)
        if job.sink_type == SinkType.knowledge_base.value and self.temporal is not None:
            try:
                page = outcome.pages_done
                result.documents = await start_ingestions(
                    self.sessions, self.temporal, self.settings, job, inp.workflow_id, page, page
                )
            except NexusError as exc:
                raise fatal(exc.detail, "SinkUnavailable") from None
        return result

    @activity.defn(name="connector_sync_page")
    async def connector_sync_page(self, inp: PageInput) -> PageResult:
        """Read one page after the stored checkpoint, write it to the sink, advance the checkpoint."""
        prep = await self._prepare_page(inp)
        if prep.done is not None or prep.connection is None:
            return await self._after_page(
                inp, prep.job, prep.done or PageOutcome(inp.expected_pages, 0, False, True)
            )
        connector = self._connector(prep.connection, prep.credentials)
        try:
            page: SyncPage = await connector.read_page(prep.job.object, prep.checkpoint, inp.page_size)
        except ConnectorError as exc:
            raise connector_failure(exc) from None
        drafts = await self._drafts(prep.job, prep.connection, page, connector)
        return await self._commit_page(inp, prep.job, page, drafts)

    @activity.defn(name="connector_sync_page_blocking")
    def connector_sync_page_blocking(self, inp: PageInput) -> PageResult:
        """``connector_sync_page`` for blocking connectors (runs on the worker's thread pool)."""
        prep = self._on_loop(self._prepare_page(inp))
        if prep.done is not None or prep.connection is None:
            done = prep.done or PageOutcome(inp.expected_pages, 0, False, True)
            return self._on_loop(self._after_page(inp, prep.job, done))
        connector = self._connector(prep.connection, prep.credentials)
        try:
            page: SyncPage = connector.read_page(prep.job.object, prep.checkpoint, inp.page_size)
        except ConnectorError as exc:
            raise connector_failure(exc) from None
        finally:
            connector.close()
        drafts = self._on_loop(self._drafts(prep.job, prep.connection, page, None))
        return self._on_loop(self._commit_page(inp, prep.job, page, drafts))

    @activity.defn(name="connector_sync_finish")
    async def connector_sync_finish(self, inp: FinishInput) -> None:
        """Close the runs row and the job's status, with the run's terminal event; then start the
        ingestions of knowledge-base pages committed after the last page the run saw return."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        event_type = {
            RunStatus.completed.value: SyncEvent.completed,
            RunStatus.cancelled.value: SyncEvent.cancelled,
        }.get(inp.status, SyncEvent.failed)
        result = {
            "job": inp.job_id,
            "pages": inp.pages,
            "records": inp.records,
            "pages_done": inp.pages_done,
        }
        if inp.dataset_version is not None:
            result["dataset_version"] = inp.dataset_version
        async with self.sessions() as session, session.begin():
            await JobRepository(session).finish(
                inp.tenant_id, inp.job_id, inp.workflow_id, status=inp.status, error=inp.error
            )
            await RunRepository.from_session(session).finish(
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                kind=RUN_KIND,
                status=RunStatus(inp.status),
                result=result,
                error=inp.error,
                cost_usd=Decimal(0),
                created_by=inp.created_by,
            )
            event = await events.store(
                session,
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                type=event_type,
                data={**result, "error": inp.error} if inp.error else result,
                seq=inp.seq,
            )
        await events.announce(self.redis, inp.workflow_id, event)
        if self.temporal is not None:  # after the run is closed: a failing start retries this
            sweep = (inp.tenant_id, inp.job_id, inp.workflow_id, inp.pages_done + 1, None)
            await start_unacknowledged_ingestions(self.sessions, self.temporal, self.settings, *sweep)

    @activity.defn(name="connector_sync_snapshot")
    async def connector_sync_snapshot(self, inp: SnapshotInput) -> SnapshotResult:
        """The dataset sink: one immutable dataset version of the synced records per sync run."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        try:
            async with self.sessions() as session, session.begin():
                job = await JobRepository(session).get(inp.tenant_id, inp.job_id)
                out = await snapshot_dataset(session, job, inp.workflow_id, inp.created_by or "schedule")
        except NexusError as exc:
            raise fatal(exc.detail, "SinkUnavailable") from None
        return SnapshotResult(
            dataset_id=out["dataset"], version=out["version"], cases=out["cases"], replayed=out["replayed"]
        )


def _result(outcome: PageOutcome) -> PageResult:
    return PageResult(
        pages_done=outcome.pages_done,
        records=outcome.records,
        has_more=outcome.has_more,
        replayed=outcome.replayed,
    )
