"""Crash tests: kill -9 the worker in the middle of a sync; it resumes from the last checkpoint and
the sink holds each record exactly once (the records table; and a knowledge base, where each
record is one document ingested by one ``IngestDocument`` execution).

The ServiceNow simulator answers every request after 150 ms, so a 300-record sync in pages of 10
takes seconds. The worker (a real ``python -m workers.main`` subprocess) is killed once at least
five pages are committed; the page in flight dies with it. A second worker takes over after the
page's start-to-close timeout and the sync continues from the stored checkpoint — it does not
read the committed pages again — and every record row was written exactly once (``writes == 1``:
a page's sink write and checkpoint advance are one transaction).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from connectors.jobs import JobRepository
from connectors.simulators.serve import RunningSimulator, start
from connectors.simulators.servicenow import ServiceNowSimulator
from connectors.store import ConnectionRepository, CredentialCipher
from core.config import Settings
from core.connector_contracts import WORKFLOW_NAME, SinkType, SyncInput, SyncResult
from core.db.connector_models import ConnectorCheckpoint, ConnectorDocument, ConnectorRecord
from core.db.rag_models import KbDocument
from core.rag.settings import LOCAL_MODEL
from core.rag.store import RagRepository
from tests.e2e.test_pipeline_crash import ROOT, wait_for, worker_env

pytestmark = pytest.mark.slow
RECORDS, PAGE = 300, 10


@pytest.fixture
def slow_sim() -> Iterator[RunningSimulator]:
    with start(ServiceNowSimulator(records=RECORDS, latency=0.15)) as sim:
        yield sim


def start_worker(settings: Settings, queue: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**worker_env(settings, queue), "NEXUS_CONNECTORS__ALLOWED_HOSTS": json.dumps(["127.0.0.1"])}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.main"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def test_kill_worker_mid_sync_resumes_from_checkpoint_each_record_once(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
    slow_sim: RunningSimulator,
    tmp_path: Path,
) -> None:
    async with sessions() as session, session.begin():
        conn = await ConnectionRepository(session, CredentialCipher.from_settings(settings)).create(
            tenant_id=tenant,
            name="snow",
            type_="servicenow",
            config={"instance_url": slow_sim.base_url},
            credentials={"username": "integration", "password": "sn-secret"},
            actor="test",
        )
        job = await JobRepository(session).create(
            tenant_id=tenant,
            connection_id=conn.id,
            obj="incident",
            sink_type=SinkType.records,
            sink_target="",
            page_size=PAGE,
            max_pages_per_minute=None,
            schedule=None,
            actor="test",
        )
        job_id = job.id
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    wid = f"connector_sync:{tenant}:{job_id}.crash"
    log = tmp_path / "worker.log"
    sim: ServiceNowSimulator = slow_sim.app

    async def pages_done() -> int:
        async with sessions() as s:
            cp = await s.scalar(select(ConnectorCheckpoint).where(ConnectorCheckpoint.job_id == job_id))
            return cp.pages_done if cp is not None else 0

    first = start_worker(settings, queue, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = await temporal_client.start_workflow(
            WORKFLOW_NAME,
            SyncInput(tenant_id=tenant, job_id=job_id, page_size=PAGE, pages_per_run=7, page_timeout_s=3),
            id=wid,
            task_queue=queue,
            result_type=SyncResult,
        )

        async def enough() -> bool:
            return await pages_done() >= 5

        await wait_for(enough, 90, f"five committed pages (worker log: {log})")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        at_kill = await pages_done()
        assert at_kill < RECORDS // PAGE, "the sync finished before the kill"
        second = start_worker(settings, queue, log)
        result = await asyncio.wait_for(handle.result(), 120)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
    assert result.status == "completed"
    assert result.pages_done == RECORDS // PAGE
    async with sessions() as s:
        rows = list(
            (await s.execute(select(ConnectorRecord).where(ConnectorRecord.tenant_id == tenant))).scalars()
        )
    assert len(rows) == RECORDS
    assert len({r.external_id for r in rows}) == RECORDS
    assert {r.writes for r in rows} == {1}, "a page was written twice"
    # resumed from the checkpoint: committed pages were not read again (at most the pages in
    # flight at the kill are repeated), whereas a restart from scratch would re-read ``at_kill``
    reads = [p for m, p in sim.request_log if m == "GET" and p.endswith("/incident")]
    assert len(reads) <= RECORDS // PAGE + 2
    assert len(reads) < RECORDS // PAGE + at_kill


KB_RECORDS, KB_PAGE = 40, 4


@pytest.fixture
def slow_kb_sim() -> Iterator[RunningSimulator]:
    with start(ServiceNowSimulator(records=KB_RECORDS, latency=0.3)) as sim:
        yield sim


async def test_kill_worker_mid_sync_into_a_knowledge_base_each_record_one_document(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
    slow_kb_sim: RunningSimulator,
    tmp_path: Path,
) -> None:
    """The knowledge-base sink under kill -9: every record ends as exactly one ready document
    with exactly one ``IngestDocument`` execution, however the pages and their ingestion starts
    were interrupted."""
    async with sessions() as session, session.begin():
        kb = await RagRepository.from_session(session).create_kb(
            tenant,
            name=f"crash-{uuid.uuid4().hex[:6]}",
            description="",
            embedding_model=LOCAL_MODEL,
            chunk_tokens=200,
            chunk_overlap=30,
            created_by="test",
        )
        conn = await ConnectionRepository(session, CredentialCipher.from_settings(settings)).create(
            tenant_id=tenant,
            name="snow-kb",
            type_="servicenow",
            config={"instance_url": slow_kb_sim.base_url},
            credentials={"username": "integration", "password": "sn-secret"},
            actor="test",
        )
        job = await JobRepository(session).create(
            tenant_id=tenant,
            connection_id=conn.id,
            obj="incident",
            sink_type=SinkType.knowledge_base,
            sink_target=str(kb.id),
            page_size=KB_PAGE,
            max_pages_per_minute=None,
            schedule=None,
            actor="test",
        )
        job_id, kb_id = job.id, kb.id
    queue = f"crash-kb-{uuid.uuid4().hex[:8]}"
    wid = f"connector_sync:{tenant}:{job_id}.crash"
    log = tmp_path / "worker.log"

    async def pages_done() -> int:
        async with sessions() as s:
            cp = await s.scalar(select(ConnectorCheckpoint).where(ConnectorCheckpoint.job_id == job_id))
            return cp.pages_done if cp is not None else 0

    async def docs() -> list[KbDocument]:
        async with sessions() as s:
            return list(await s.scalars(select(KbDocument).where(KbDocument.kb_id == kb_id)))

    first = start_worker(settings, queue, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = await temporal_client.start_workflow(
            WORKFLOW_NAME,
            SyncInput(tenant_id=tenant, job_id=job_id, page_size=KB_PAGE, pages_per_run=4, page_timeout_s=3),
            id=wid,
            task_queue=queue,
            result_type=SyncResult,
        )

        async def enough() -> bool:
            return await pages_done() >= 3

        await wait_for(enough, 90, f"three committed pages (worker log: {log})")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        assert await pages_done() < KB_RECORDS // KB_PAGE, "the sync finished before the kill"
        second = start_worker(settings, queue, log)
        result = await asyncio.wait_for(handle.result(), 120)
        assert result.status == "completed"

        async def all_ready() -> bool:
            found = await docs()
            return len(found) >= KB_RECORDS and all(d.status == "ready" for d in found)

        await wait_for(all_ready, 180, f"every document ready (worker log: {log})")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
    found = await docs()
    assert len(found) == KB_RECORDS
    assert len({d.sha256 for d in found}) == KB_RECORDS
    async with sessions() as s:
        linked = list(await s.scalars(select(ConnectorDocument).where(ConnectorDocument.kb_id == kb_id)))
    assert len(linked) == KB_RECORDS
    assert {link.document_id for link in linked} == {d.id for d in found}
    assert {link.version for link in linked} == {1}
    for doc in found:
        runs = [w async for w in temporal_client.list_workflows(f"WorkflowId = '{doc.workflow_id}'")]
        assert len(runs) == 1, doc.workflow_id
