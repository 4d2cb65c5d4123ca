"""Knowledge-base sync: no document is left ``pending`` without an ingestion run, and no
ingestion step waits minutes for a worker that died.

- A page committed its documents, then its activity died before it started their ingestions,
  and no retry of that page came. When the run is cancelled (or fails), its finish starts them;
  when it is terminated and another run of the job takes the checkpoint over, that run's begin
  starts them (the lost page's retry then fails as superseded). Under their deterministic ids:
  a retried finish or begin starts nothing twice, and each document has one ingestion run.
- Every activity of ``IngestDocument`` is noticed dead within seconds (a heartbeat timeout, or
  a short start-to-close timeout), so a kill -9 of the worker never parks a document for the
  five minutes of a step's start-to-close timeout.

The lost start is reproduced without kill timing: the start function is made to raise after the
page's commit, in the page activity itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

import activities.connectors as connector_activities
from activities.connectors import ConnectorActivities
from connectors.simulators.serve import RunningSimulator
from core.config import Settings
from core.connector_contracts import BeginInput, FinishInput, PageInput
from core.db.connector_models import ConnectorDocument
from core.db.rag_models import KbDocument
from core.temporal.client import connect
from tests import connector_support as support
from tests.connector_support import MakeKey, create_connection, create_job, servicenow_body
from tests.workflows import test_connector_sinks as kb_sync
from tests.workflows.test_connector_sinks import RECORDS, all_ready, documents, ingest_executions, make_kb

conn_api = support.conn_api
conn_worker = support.conn_worker
salesforce_sim = support.salesforce_sim
conn_settings = kb_sync.conn_settings
servicenow_sim = kb_sync.servicenow_sim
acts = kb_sync.acts
PAGE = RECORDS // 2
# Longest a step of IngestDocument may wait for a killed worker's attempt before it is retried.
NOTICED_WITHIN = dt.timedelta(seconds=30)


def env_for(workflow_id: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
    return env


async def page_documents(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, workflow_id: str, page: int
) -> list[KbDocument]:
    async with sessions() as session:
        rows = await session.scalars(
            select(KbDocument)
            .join(ConnectorDocument, ConnectorDocument.document_id == KbDocument.id)
            .where(
                ConnectorDocument.tenant_id == tenant_id,
                ConnectorDocument.sync_workflow_id == workflow_id,
                ConnectorDocument.page == page,
            )
        )
        return list(rows)


async def started(temporal: Client, workflow_id: str) -> bool:
    try:
        await temporal.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


@pytest.mark.parametrize("ending", ["cancelled", "taken_over"])
async def test_a_page_whose_retry_never_came_still_gets_its_ingestions(
    ending: str,
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
    conn_settings: Settings,
    acts: ConnectorActivities,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(conn_api, key)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim, name="snow-lost"))
    job = await create_job(
        conn_api,
        key,
        connection=conn["id"],
        object="incident",
        page_size=PAGE,
        sink={"type": "knowledge_base", "target": kb["id"]},
    )
    temporal = await connect(conn_settings)
    wid = f"connector_sync:{tenant_id}:{job['id']}.lost"
    env = env_for(wid)
    await env.run(
        acts.connector_sync_begin, BeginInput(tenant_id=tenant_id, job_id=job["id"], workflow_id=wid, seq=1)
    )
    first = await env.run(
        acts.connector_sync_page,
        PageInput(
            tenant_id=tenant_id, job_id=job["id"], workflow_id=wid, expected_pages=0, page_size=PAGE, seq=2
        ),
    )
    assert (first.pages_done, first.documents) == (1, PAGE)  # returned: the workflow saw page 1

    async def dies(*_: Any, **__: Any) -> int:
        raise RuntimeError("worker killed after the page's commit")

    monkeypatch.setattr(connector_activities, "start_ingestions", dies)
    second = PageInput(
        tenant_id=tenant_id, job_id=job["id"], workflow_id=wid, expected_pages=1, page_size=PAGE, seq=3
    )
    with pytest.raises(RuntimeError):
        await env.run(acts.connector_sync_page, second)
    monkeypatch.undo()
    lost = await page_documents(sessions, tenant_id, wid, 2)
    assert len(lost) == PAGE
    assert {d.status for d in lost} == {"pending"}  # committed with page 2 ...
    assert not any([await started(temporal, d.workflow_id) for d in lost])  # ... never started

    if ending == "cancelled":
        # the run is cancelled before the page's retry: it closes with the pages it saw return (1)
        finish = FinishInput(
            tenant_id=tenant_id,
            job_id=job["id"],
            workflow_id=wid,
            status="cancelled",
            pages=1,
            records=PAGE,
            pages_done=1,
            seq=4,
        )
        await env.run(acts.connector_sync_finish, finish)
        assert all([await started(temporal, d.workflow_id) for d in lost])
        await env.run(acts.connector_sync_finish, finish)  # a retried finish starts nothing twice
    else:
        # the run is terminated (no finish) and another run of the job takes the checkpoint over:
        # its begin starts them; the lost page's retry, if any came, fails as superseded
        other = f"connector_sync:{tenant_id}:{job['id']}.other"
        begin = BeginInput(tenant_id=tenant_id, job_id=job["id"], workflow_id=other, seq=1)
        await env_for(other).run(acts.connector_sync_begin, begin)
        assert all([await started(temporal, d.workflow_id) for d in lost])
        await env_for(other).run(acts.connector_sync_begin, begin)  # a retried begin: no twins
        with pytest.raises(ApplicationError) as superseded:
            await env.run(acts.connector_sync_page, second)
        assert superseded.value.type == "SyncSuperseded"

    docs = await all_ready(sessions, kb["id"], RECORDS)
    assert {d.status for d in docs} == {"ready"}
    assert {d.id for d in lost} <= {d.id for d in docs}
    assert set((await ingest_executions(temporal, docs)).values()) == {1}
    assert len(await documents(sessions, kb["id"])) == RECORDS


async def test_every_ingest_step_notices_a_killed_worker_within_seconds(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
    conn_settings: Settings,
    acts: ConnectorActivities,
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(conn_api, key)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim, name="snow-steps"))
    job = await create_job(
        conn_api,
        key,
        connection=conn["id"],
        object="incident",
        page_size=RECORDS,
        sink={"type": "knowledge_base", "target": kb["id"]},
    )
    wid = f"connector_sync:{tenant_id}:{job['id']}.steps"
    env = env_for(wid)
    await env.run(
        acts.connector_sync_begin, BeginInput(tenant_id=tenant_id, job_id=job["id"], workflow_id=wid, seq=1)
    )
    await env.run(
        acts.connector_sync_page,
        PageInput(
            tenant_id=tenant_id, job_id=job["id"], workflow_id=wid, expected_pages=0, page_size=RECORDS, seq=2
        ),
    )
    docs = await all_ready(sessions, kb["id"], RECORDS)
    temporal = await connect(conn_settings)
    history = await temporal.get_workflow_handle(docs[0].workflow_id).fetch_history()
    slow: list[str] = []
    scheduled = 0
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        scheduled += 1
        attrs = event.activity_task_scheduled_event_attributes
        heartbeat = attrs.heartbeat_timeout.ToTimedelta() if attrs.HasField("heartbeat_timeout") else None
        limit = heartbeat or attrs.start_to_close_timeout.ToTimedelta()
        if not limit or limit > NOTICED_WITHIN:
            slow.append(f"{attrs.activity_type.name}: {limit}")
    assert scheduled >= 6  # events, parse, PII hook, chunk, embed, finalize, finish
    assert not slow, f"steps that wait minutes for a killed worker: {slow}"
