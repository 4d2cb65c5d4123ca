"""Connector activities: sync pages of ``ConnectorSync`` and ``connector`` steps of pipelines.

Credentials never travel through Temporal: each activity loads the connection by id and
decrypts its credentials itself. Connector failures map to Temporal retries by their kind:
throttling, unavailability and timeouts retry (throttling after the vendor's ``Retry-After``,
as ``next_retry_delay``); auth, permission, validation, config and not-installed fail fast.

Blocking connectors (Salesforce) run in the ``*_blocking`` variants: plain ``def`` activities
on the worker's thread pool. Their database work is submitted to the worker's event loop, so
one async engine serves both kinds.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

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
from connectors.sinks import DatasetSink, DocumentDraft, FileFetch, KnowledgeBaseSink, file_download
from connectors.store import ConnectionRepository, CredentialCipher, build_connector
from core import events
from core.config import Settings
from core.connector_contracts import (
    RUN_KIND,
    BeginInput,
    BeginResult,
    ConnectorCall,
    ConnectorPlan,
    FinishInput,
    PageInput,
    PageResult,
    PlanInput,
    SinkType,
    SnapshotInput,
    SnapshotResult,
    SyncEvent,
)
from core.contracts import RunStatus
from core.db.connector_models import Connection, ConnectorJob
from core.errors import NexusError
from core.pipelines import templating
from core.pipelines.contracts import StepCall, StepOutput
from core.pipelines.definition import ConnectorStep
from core.pipelines.repository import EffectRepository
from core.rag.settings import rag_settings
from core.runs import RunRepository

T = TypeVar("T")
_CACHE_SIZE = 32


def connector_failure(exc: ConnectorError) -> ApplicationError:
    """A connector error as a Temporal failure: retryable by kind, ``Retry-After`` honoured."""
    delay = dt.timedelta(seconds=exc.retry_after) if exc.retry_after else None
    return ApplicationError(
        exc.message,
        type=f"connector_{exc.kind.value}",
        non_retryable=not exc.retryable,
        next_retry_delay=delay if exc.retryable else None,
    )


def fatal(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


@dataclass
class _Prepared:
    job: ConnectorJob
    connection: Connection | None
    credentials: dict[str, Any]
    checkpoint: dict[str, Any] | None
    done: PageOutcome | None


class ConnectorActivities:
    """Sync and action activities, bound to the worker's database, Redis and settings."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        settings: Settings,
        pipelines: PipelineActivities | None = None,
        temporal: Client | None = None,
    ) -> None:
        self.sessions = sessions
        self.redis = redis
        self.settings = settings
        self.temporal = temporal
        self.section = settings.connectors
        self.cipher = CredentialCipher.from_settings(settings)
        self.pipelines = pipelines or PipelineActivities(sessions, redis, settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cache: OrderedDict[tuple[str, str, str], Connector] = OrderedDict()
        self.sinks: dict[str, Sink] = {
            SinkType.records.value: RecordsSink(),
            SinkType.dataset.value: DatasetSink(),
        }
        self.kb_sink = KnowledgeBaseSink(rag_settings(settings).max_upload_bytes)
        if temporal is not None:  # documents are ingested by workflows this client starts
            self.sinks[SinkType.knowledge_base.value] = self.kb_sink

    # --- plumbing -----------------------------------------------------------------------

    def bind_loop(self) -> None:
        """Remember the worker's event loop (blocking activities submit database work to it)."""
        self._loop = asyncio.get_running_loop()

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise fatal("blocking connector activities need bind_loop() at worker start", "ConnectorConfig")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _connection(self, tenant_id: str, id_or_name: str) -> tuple[Connection, dict[str, Any]]:
        async with self.sessions() as session:
            repo = ConnectionRepository(session, self.cipher)
            try:
                row = await repo.get(tenant_id, id_or_name)
                return row, repo.credentials(row)
            except NexusError as exc:
                raise fatal(exc.detail, "ConnectionUnavailable") from None

    def _connector(self, row: Connection, credentials: dict[str, Any]) -> Connector:
        """A connector for the connection (async ones are reused while the row is unchanged)."""
        try:
            if registry.get(row.type).blocking:
                return build_connector(row, credentials, self.section)
            key = (row.tenant_id, row.id, row.updated_at.isoformat())
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            connector = build_connector(row, credentials, self.section)
        except ConnectorError as exc:
            raise connector_failure(exc) from None
        self._cache[key] = connector
        while len(self._cache) > _CACHE_SIZE:
            _, old = self._cache.popitem(last=False)
            asyncio.ensure_future(old.close())
        return connector

    async def aclose(self) -> None:
        """Close the cached connectors (worker shutdown)."""
        while self._cache:
            _, old = self._cache.popitem()
            await old.close()

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

    # --- pipeline connector steps ---------------------------------------------------------

    @activity.defn(name="connector_plan")
    async def connector_plan(self, inp: PlanInput) -> ConnectorPlan:
        """The connection's type, whether it blocks, and the action's declared compensation."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self.sessions() as session:
            try:
                row = await ConnectionRepository(session, self.cipher).get(inp.tenant_id, inp.connection)
            except NexusError as exc:
                raise fatal(exc.detail, "BadInput") from None
        try:
            cls = registry.get(row.type)
        except ConnectorError as exc:
            raise connector_failure(exc) from None
        spec = cls.actions.get(inp.action)
        if spec is None:
            raise fatal(f"connector {row.type!r} has no action {inp.action!r}", "BadInput")
        return ConnectorPlan(
            connection_id=row.id, type=row.type, blocking=cls.blocking, compensation=spec.compensation
        )

    async def _action_prepare(self, call: ConnectorCall) -> tuple[StepCall, dict[str, Any] | None, Any]:
        """(step call, recorded response or None, (connection id, action, payload) to run)."""
        require_own_workflow(call.workflow_id, call.tenant_id)
        try:
            step = ConnectorStep.model_validate(call.step)
        except ValueError:
            raise fatal("connector_action needs a connector step", "BadInput") from None
        sc = StepCall(
            tenant_id=call.tenant_id,
            workflow_id=call.workflow_id,
            step=call.step,
            idempotency_key=call.idempotency_key,
            context=call.context,
            events=call.events,
        )
        await self.pipelines.started(sc)
        async with self.sessions() as session:
            effects = EffectRepository(session)
            recorded = await effects.find(call.tenant_id, call.idempotency_key)
            if recorded is not None:
                return sc, dict(recorded.response), None
            if call.undo_of is not None:
                forward_key = call.idempotency_key.replace(":comp:", ":", 1)
                forward = await effects.find(call.tenant_id, forward_key)
                undo = (forward.response or {}).get("undo") if forward is not None else None
                if not undo:
                    return sc, None, ("", "", {"nothing": True})
                return sc, None, (forward.response["connection_id"], undo["action"], undo["input"])  # type: ignore[union-attr]
        scope = await self.pipelines.context(call.tenant_id, call.context)
        try:
            payload = templating.render_value(step.input, scope)
        except templating.TemplateFailed as exc:
            raise fatal(str(exc), "TemplateFailed") from None
        return sc, None, (step.connection, step.action, payload)

    async def _action_record(
        self, sc: StepCall, connection_id: str, action: str, output: dict[str, Any], undo: Any
    ) -> StepOutput:
        response = {"connection_id": connection_id, "action": action, "output": output, "undo": undo}

        async def record(session: AsyncSession) -> Any:
            await EffectRepository(session).record(
                sc.tenant_id, sc.workflow_id, sc.idempotency_key, 200, response
            )
            return output

        return await self.pipelines.finished(sc, record)

    async def _replay(self, sc: StepCall, recorded: dict[str, Any]) -> StepOutput:
        output = recorded.get("output")

        async def replay(_: AsyncSession) -> Any:
            return output

        return await self.pipelines.finished(sc, replay)

    @activity.defn(name="connector_action")
    async def connector_action(self, call: ConnectorCall) -> StepOutput:
        """A pipeline ``connector`` step (or its declared undo), recorded once under its key."""
        sc, recorded, todo = await self._action_prepare(call)
        if recorded is not None:
            return await self._replay(sc, recorded)
        conn_ref, action, payload = todo
        if not action:
            return await self._action_record(sc, "", "", {"undone": False, "reason": "nothing to undo"}, None)
        row, credentials = await self._connection(call.tenant_id, conn_ref)
        connector = self._connector(row, credentials)
        try:
            output = await connector.run_action(action, payload, call.idempotency_key)
            undo = _undo(connector, action, payload, output)
        except ConnectorError as exc:
            raise connector_failure(exc) from None
        return await self._action_record(sc, row.id, action, output, undo)

    @activity.defn(name="connector_action_blocking")
    def connector_action_blocking(self, call: ConnectorCall) -> StepOutput:
        """``connector_action`` for blocking connectors (runs on the worker's thread pool)."""
        sc, recorded, todo = self._on_loop(self._action_prepare(call))
        if recorded is not None:
            return self._on_loop(self._replay(sc, recorded))
        conn_ref, action, payload = todo
        if not action:
            return self._on_loop(
                self._action_record(sc, "", "", {"undone": False, "reason": "nothing to undo"}, None)
            )
        row, credentials = self._on_loop(self._connection(call.tenant_id, conn_ref))
        connector = self._connector(row, credentials)
        try:
            output = connector.run_action(action, payload, call.idempotency_key)
            undo = _undo(connector, action, payload, output)
        except ConnectorError as exc:
            raise connector_failure(exc) from None
        finally:
            connector.close()
        return self._on_loop(self._action_record(sc, row.id, action, output, undo))


def _undo(connector: Connector, action: str, payload: dict[str, Any], output: dict[str, Any]) -> Any:
    spec = connector.action(action)
    undo_input = spec.undo_payload(payload, output)
    if undo_input is None or spec.compensation is None:
        return None
    return {"action": spec.compensation, "input": undo_input}


def _result(outcome: PageOutcome) -> PageResult:
    return PageResult(
        pages_done=outcome.pages_done,
        records=outcome.records,
        has_more=outcome.has_more,
        replayed=outcome.replayed,
    )
