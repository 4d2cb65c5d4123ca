"""What a sink leaves out is counted, and a dataset holds only its own job's records.

- knowledge base: records whose template refers to a missing field are skipped; each page counts
  them by kind in its ``connector.page`` event and the checkpoint, and ``GET
  /v1/connector-jobs/{id}`` shows the totals (counts only: no record data, no credentials);
- dataset: rows another job wrote from the same (connection, object) stay out of the snapshot,
  while a row of this job that another job rewrote later stays in (with its current content).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.base import SyncRecord
from connectors.jobs import JobRepository, RecordsSink
from connectors.simulators.serve import RunningSimulator, start
from connectors.simulators.servicenow import ServiceNowSimulator, sys_id_for
from core import events
from core.config import Settings
from core.connector_contracts import SinkType, SyncEvent
from core.db.eval_models import EvalDatasetCase
from core.db.rag_models import KbDocument
from tests import connector_support as support
from tests.conftest import auth
from tests.connector_support import (
    MakeKey,
    create_connection,
    create_job,
    servicenow_body,
    start_run,
    wait_run,
)

conn_api = support.conn_api
conn_worker = support.conn_worker
salesforce_sim = support.salesforce_sim
RECORDS = 9  # urgency cycles 1, 2, 3: records 0, 3 and 6 have urgency 1


@pytest.fixture(scope="module")
def servicenow_sim() -> Iterator[RunningSimulator]:
    with start(ServiceNowSimulator(records=RECORDS, password=support.SN_PASSWORD)) as sim:
        yield sim


@pytest_asyncio.fixture(scope="module")
async def conn_settings(settings: Settings, salesforce_sim: RunningSimulator) -> Settings:
    return support.connector_settings(settings, ca_bundle=salesforce_sim.ca_path or "")


async def test_knowledge_base_sink_counts_skipped_records_by_kind(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    made = await conn_api.post(
        "/v1/knowledge-bases", json={"name": f"skips-{uuid.uuid4().hex[:8]}"}, headers=auth(key)
    )
    assert made.status_code == 201, made.text
    kb = made.json()
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim, name="snow-skips"))
    text = (
        '{% if record.urgency == "1" %}{{ record.no_such_field }}'
        "{% else %}{{ record.short_description }}{% endif %}"
    )
    job = await create_job(
        conn_api,
        key,
        connection=conn["id"],
        object="incident",
        page_size=5,
        sink={"type": "knowledge_base", "target": kb["id"], "options": {"text": text}},
    )
    wid = await start_run(conn_api, key, job["id"])
    run = await wait_run(conn_api, key, wid)
    assert run["status"] == "completed", run

    got = await conn_api.get(f"/v1/connector-jobs/{job['id']}", headers=auth(key))
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["records_skipped"] == 3
    assert body["skipped_by_kind"] == {"template_error": 3}
    assert body["records_written"] == RECORDS - 3

    async with sessions() as session:
        stored = await events.stored_events(session, tenant_id=tenant_id, workflow_id=wid)
    pages = [e for e in stored if e.type == SyncEvent.page.value]
    assert len(pages) == 2
    assert sum(p.data["skipped"] for p in pages) == 3
    assert sorted(p.data["skipped_by_kind"]["template_error"] for p in pages) == [1, 2]
    progress = json.dumps([p.data for p in pages])
    for record_data in ("Seeded incident", "no_such_field", sys_id_for("incident", 0)):
        assert record_data not in progress  # counts by kind only
    assert support.SN_PASSWORD not in progress + got.text

    for _ in range(600):  # let the ingestions end before the module's worker stops
        async with sessions() as session:
            docs = list(
                await session.scalars(select(KbDocument).where(KbDocument.kb_id == uuid.UUID(kb["id"])))
            )
        if len(docs) == RECORDS - 3 and all(d.status in ("ready", "failed") for d in docs):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("documents not indexed")


async def test_dataset_snapshot_holds_only_the_jobs_own_records(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim, name="snow-own"))
    dataset = f"own-{uuid.uuid4().hex[:6]}"
    job = await create_job(
        conn_api,
        key,
        connection=conn["id"],
        object="incident",
        page_size=5,
        sink={"type": "dataset", "target": dataset, "options": {"input": "{{ record.short_description }}"}},
    )
    other = await create_job(conn_api, key, connection=conn["id"], object="incident", page_size=5)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    async with sessions() as session, session.begin():  # the other job wrote a row this job never read
        other_job = await JobRepository(session).get(tenant_id, other["id"])
        await RecordsSink().write(
            session,
            other_job,
            [SyncRecord(external_id="foreign-1", modified_at=later, data={"short_description": "not ours"})],
        )

    first = await wait_run(conn_api, key, await start_run(conn_api, key, job["id"]))
    assert first["status"] == "completed", first
    assert await cases(sessions, tenant_id, dataset, 1) == {
        sys_id_for("incident", i): f"Seeded incident {i}" for i in range(RECORDS)
    }

    # the other job rewrites one of this job's rows: it stays this job's record (current content)
    async with sessions() as session, session.begin():
        other_job = await JobRepository(session).get(tenant_id, other["id"])
        assert other_job.sink_type == SinkType.records.value
        await RecordsSink().write(
            session,
            other_job,
            [
                SyncRecord(
                    external_id=sys_id_for("incident", 0),
                    modified_at=later,
                    data={"short_description": "rewritten"},
                )
            ],
        )
    second = await wait_run(conn_api, key, await start_run(conn_api, key, job["id"]))
    assert second["status"] == "completed", second
    assert second["result"]["dataset_version"] == 2
    got = await cases(sessions, tenant_id, dataset, 2)
    assert "foreign-1" not in got
    assert len(got) == RECORDS
    assert got[sys_id_for("incident", 0)] == "rewritten"


async def cases(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, dataset: str, version: int
) -> dict[str, str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(EvalDatasetCase).where(
                EvalDatasetCase.tenant_id == tenant_id,
                EvalDatasetCase.dataset_id == dataset,
                EvalDatasetCase.version == version,
            )
        )
        return {r.case_id: r.data["input"] for r in rows}
