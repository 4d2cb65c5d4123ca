"""Side effects of the knowledge-base and dataset sinks that follow a committed page or run.

- :func:`start_ingestions`: after a page committed its documents (or when a retry finds the page
  committed already), start ``IngestDocument`` for each still-pending document of that page under
  the document's own workflow id ``ingest:{tenant}:{document}``. The id is stored with the
  document in the page's transaction, so every attempt starts the same runs: a running twin is
  reused and a closed one is never started again.
- :func:`start_unacknowledged_ingestions`: the same for a page committed by an activity that
  never returned (killed after its commit, then no retry came), at a run's finish and at the
  next run's begin.
- :func:`snapshot_dataset`: at the end of a completed run, one immutable dataset version from the
  job's own synced records (rows another job wrote from the same source are left out). The version carries the sync's workflow id in its ``source_ref``; under
  the dataset's row lock a retried finish finds it and creates nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from connectors.sinks_dataset import dataset_cases, job_records
from connectors.sinks_kb import page_documents_to_ingest
from core.config import Settings
from core.connector_contracts import SinkType
from core.contracts import SA_CREATED_BY, SA_RUN_KIND, SA_TENANT_ID
from core.db.connector_models import ConnectorCheckpoint, ConnectorJob
from core.db.eval_models import EvalDataset, EvalDatasetVersion
from core.errors import NotFound, ValidationFailed
from core.orchestration.contracts import PayloadRef
from core.rag.contracts import RUN_KIND as INGEST_KIND
from core.rag.contracts import WORKFLOW_NAME as INGEST_WORKFLOW
from core.rag.contracts import IngestInput
from core.rag.settings import rag_settings
from core.rag.store import RagRepository
from core.runs import RunRepository
from evals.contracts import EvalCase
from evals.repository import DatasetRepository

INGEST_TIMEOUT = dt.timedelta(hours=6)  # as an upload's ingestion run
_START_CONCURRENCY = 16
DATASET_SOURCE = "connector"


async def start_ingestions(
    sessions: async_sessionmaker[AsyncSession],
    temporal: Client,
    settings: Settings,
    job: ConnectorJob,
    sync_workflow_id: str,
    first_page: int,
    last_page: int | None,
) -> int:
    """Ensure the ingestion run of every pending document the run's pages ``first_page`` through
    ``last_page`` (``None``: and later) link exists; returns how many were ensured."""
    cfg = rag_settings(settings)
    actor = f"connector:{job.id}"
    async with sessions() as session, session.begin():
        docs = await page_documents_to_ingest(
            session, job.tenant_id, job.id, sync_workflow_id, first_page, last_page
        )
        if not docs:
            return 0
        kb = await RagRepository.from_session(session).get_kb(job.tenant_id, job.sink_target)
        runs = RunRepository.from_session(session)
        inputs: list[tuple[str, IngestInput]] = []
        for doc in docs:
            await runs.create(
                tenant_id=job.tenant_id,
                workflow_id=doc.workflow_id,
                kind=INGEST_KIND,
                created_by=actor,
                input_summary={
                    "document_id": str(doc.id),
                    "knowledge_base_id": str(kb.id),
                    "title": doc.title,
                },
            )
            source = PayloadRef(
                id=str(doc.source_payload_id),
                sha256=doc.sha256,
                size=doc.size,
                preview=f"{doc.content_type}, {doc.size} bytes",
            )
            inputs.append(
                (
                    doc.workflow_id,
                    IngestInput(
                        tenant_id=job.tenant_id,
                        kb_id=str(kb.id),
                        document_id=str(doc.id),
                        source=source,
                        content_type=doc.content_type,
                        embedding_model=kb.pending_embedding_model or kb.embedding_model,
                        chunk_tokens=kb.chunk_tokens,
                        chunk_overlap=kb.chunk_overlap,
                        embed_batch=cfg.embed_batch,
                        created_by=actor,
                    ),
                )
            )
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT_ID, job.tenant_id),
            SearchAttributePair(SA_RUN_KIND, INGEST_KIND),
            SearchAttributePair(SA_CREATED_BY, actor),
        ]
    )
    gate = asyncio.Semaphore(_START_CONCURRENCY)

    async def start(wid: str, inp: IngestInput) -> None:
        async with gate:
            try:
                await temporal.start_workflow(
                    INGEST_WORKFLOW,
                    inp,
                    id=wid,
                    task_queue=settings.temporal.task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    search_attributes=attributes,
                    execution_timeout=INGEST_TIMEOUT,
                )
            except WorkflowAlreadyStartedError:
                pass  # closed under this id already: never ingested twice

    await asyncio.gather(*(start(wid, inp) for wid, inp in inputs))
    return len(inputs)


async def start_unacknowledged_ingestions(
    sessions: async_sessionmaker[AsyncSession],
    temporal: Client,
    settings: Settings,
    tenant_id: str,
    job_id: str,
    sync_workflow_id: str,
    first_page: int,
    last_page: int | None,
) -> int:
    """Start the ingestions a sync run may have lost: those of its pages ``first_page`` through
    ``last_page`` (``None``: and later) whose page activity never returned to the workflow.

    A page activity returns only after its ingestions started, and a retry that finds its page
    committed starts them again. But an activity killed between its commit and its starts may
    get no retry: the run is cancelled, fails (attempts exhausted, a non-retryable error) or is
    terminated, or another run of the job takes the checkpoint over (the retry then fails as
    superseded). The documents of that page would stay ``pending`` with no ingestion run for
    good: a later sync does not read those records again, and an unchanged record is not
    re-ingested. So the run's finish sweeps the pages after the last one it saw return, and the
    next run's begin sweeps the previous owner's last committed page (a terminated run has no
    finish). Pages commit one at a time, so either sweep covers at most one page; the starts are
    idempotent (same workflow ids), so sweeping a page whose starts happened starts nothing twice.
    """
    async with sessions() as session:
        job = await session.scalar(
            select(ConnectorJob).where(ConnectorJob.tenant_id == tenant_id, ConnectorJob.id == job_id)
        )
    if job is None or job.sink_type != SinkType.knowledge_base.value:
        return 0
    try:
        return await start_ingestions(
            sessions, temporal, settings, job, sync_workflow_id, first_page, last_page
        )
    except (NotFound, ValidationFailed):  # the knowledge base is gone, and its documents with it
        return 0


async def start_previous_owner_ingestions(
    sessions: async_sessionmaker[AsyncSession],
    temporal: Client,
    settings: Settings,
    tenant_id: str,
    job_id: str,
    sync_workflow_id: str,
) -> int:
    """Before a run takes a job over: sweep the previous owner's last committed page.

    A terminated run has no finish to do it (see :func:`start_unacknowledged_ingestions`). This
    runs before the takeover commits, so a failing start retries the begin while the previous
    owner is still the checkpoint's.
    """
    async with sessions() as session:
        cp = await session.scalar(
            select(ConnectorCheckpoint).where(
                ConnectorCheckpoint.tenant_id == tenant_id, ConnectorCheckpoint.job_id == job_id
            )
        )
    if cp is None or not cp.owner_workflow_id or cp.owner_workflow_id == sync_workflow_id:
        return 0
    owner, page = cp.owner_workflow_id, cp.pages_done
    return await start_unacknowledged_ingestions(
        sessions, temporal, settings, tenant_id, job_id, owner, page, page
    )


async def snapshot_dataset(
    session: AsyncSession, job: ConnectorJob, sync_workflow_id: str, actor: str
) -> dict[str, Any]:
    """Create (once per sync run) a dataset version of the job's records; what happened."""
    repo = DatasetRepository.from_session(session)
    dataset_id = job.sink_target
    locked = await session.scalar(
        select(EvalDataset)
        .where(EvalDataset.tenant_id == job.tenant_id, EvalDataset.id == dataset_id)
        .with_for_update()
    )
    if locked is None:
        await repo.create(job.tenant_id, dataset_id, dataset_id, f"Synced by connector job {job.id}", actor)
        await session.scalar(
            select(EvalDataset)
            .where(EvalDataset.tenant_id == job.tenant_id, EvalDataset.id == dataset_id)
            .with_for_update()
        )
    existing = await session.scalar(
        select(EvalDatasetVersion.version).where(
            EvalDatasetVersion.tenant_id == job.tenant_id,
            EvalDatasetVersion.dataset_id == dataset_id,
            EvalDatasetVersion.source_ref["workflow_id"].astext == sync_workflow_id,
        )
    )
    if existing is not None:
        return {"dataset": dataset_id, "version": existing, "cases": 0, "replayed": True}
    rows = await job_records(session, job)  # this job's records, not another job's on the same source
    raw, _skipped = dataset_cases(job, rows)
    if not raw:
        raise NotFound("no synced record produced a dataset case (check the field map)")
    version = await repo.add_version(
        job.tenant_id,
        dataset_id,
        [EvalCase.model_validate(c) for c in raw],
        source=DATASET_SOURCE,
        created_by=actor,
        source_ref={"workflow_id": sync_workflow_id, "job": job.id, "connection": job.connection_id},
        comment=f"{job.object} synced by connector job {job.id}",
    )
    return {"dataset": dataset_id, "version": version.version, "cases": len(raw), "replayed": False}
