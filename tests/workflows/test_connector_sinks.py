"""``ConnectorSync`` into the knowledge-base and dataset sinks, against the vendor simulators.

- knowledge base: each ServiceNow record becomes one document (templated title/text/metadata),
  ingested by ``IngestDocument`` runs; an updated record replaces its document (version 2, the
  old document erased), an unchanged re-sync adds nothing; Microsoft 365 drive items are
  downloaded and ingested as files, and a deleted file's document is removed;
- the page activity run twice (the first attempt dies after its commit, before it started the
  ingestions): each record's document exists once and each ingestion run exists once;
- dataset: one immutable version per completed run, a retried snapshot creates none;
- the records endpoints (cursor pagination, tenant scoping) and schedule PATCH/pause/unpause.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

import activities.connectors as connector_activities
from activities.connectors import ConnectorActivities
from connectors.simulators.m365 import DRIVE, M365Simulator, item_id
from connectors.simulators.serve import RunningSimulator, start
from connectors.simulators.servicenow import ServiceNowSimulator, sys_id_for
from core.config import Settings
from core.connector_contracts import BeginInput, PageInput, SnapshotInput
from core.db.connector_models import ConnectorDocument
from core.db.eval_models import EvalDatasetCase, EvalDatasetVersion
from core.db.rag_models import KbDocument
from core.temporal.client import connect
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
RECORDS = 12
KB_OPTIONS = {
    "title": "{{ record.short_description }}",
    "text": "Incident {{ external_id }}: {{ record.short_description }} (urgency {{ record.urgency }})",
    "metadata": {"urgency": "{{ record.urgency }}"},
}


@pytest.fixture(scope="module")
def servicenow_sim() -> Iterator[RunningSimulator]:
    with start(ServiceNowSimulator(records=RECORDS, password=support.SN_PASSWORD)) as sim:
        yield sim


@pytest.fixture(scope="module")
def m365_sim() -> Iterator[RunningSimulator]:
    with start(M365Simulator(records=6)) as sim:
        yield sim


@pytest_asyncio.fixture(scope="module")
async def conn_settings(settings: Settings, salesforce_sim: RunningSimulator) -> Settings:
    return support.connector_settings(settings, ca_bundle=salesforce_sim.ca_path or "")


@pytest_asyncio.fixture
async def acts(
    conn_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[ConnectorActivities]:
    redis = Redis.from_url(conn_settings.redis.url)
    temporal = await connect(conn_settings)
    yield ConnectorActivities(sessions, redis, conn_settings, temporal=temporal)
    await redis.aclose()


async def make_kb(api: httpx.AsyncClient, key: str) -> dict[str, Any]:
    response = await api.post(
        "/v1/knowledge-bases", json={"name": f"synced-{uuid.uuid4().hex[:8]}"}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    kb: dict[str, Any] = response.json()
    return kb


async def documents(sessions: async_sessionmaker[AsyncSession], kb_id: str) -> list[KbDocument]:
    async with sessions() as session:
        rows = await session.scalars(select(KbDocument).where(KbDocument.kb_id == uuid.UUID(kb_id)))
        return list(rows)


async def links(sessions: async_sessionmaker[AsyncSession], kb_id: str) -> dict[str, ConnectorDocument]:
    async with sessions() as session:
        rows = await session.scalars(
            select(ConnectorDocument).where(ConnectorDocument.kb_id == uuid.UUID(kb_id))
        )
        return {r.external_id: r for r in rows}


async def all_ready(sessions: async_sessionmaker[AsyncSession], kb_id: str, count: int) -> list[KbDocument]:
    for _ in range(600):
        docs = await documents(sessions, kb_id)
        if len(docs) == count and all(d.status in ("ready", "failed") for d in docs):
            return docs
        await asyncio.sleep(0.2)
    raise AssertionError(f"documents not indexed: {[(d.title, d.status) for d in docs]}")


async def ingest_executions(temporal: Client, docs: list[KbDocument]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in docs:
        found = [w async for w in temporal.list_workflows(f"WorkflowId = '{doc.workflow_id}'")]
        counts[doc.workflow_id] = len(found)
    return counts


async def test_knowledge_base_sink_one_document_per_record_updates_replace(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
    conn_settings: Settings,
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(conn_api, key)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim))
    bad = await conn_api.post(
        "/v1/connector-jobs",
        json={
            "connection": conn["id"],
            "object": "incident",
            "sink": {"type": "knowledge_base", "target": kb["name"], "options": {"text": "{{ record.x "}},
        },
        headers=auth(key),
    )
    assert bad.status_code == 422, bad.text
    job = await create_job(
        conn_api,
        key,
        connection=conn["id"],
        object="incident",
        page_size=5,
        sink={"type": "knowledge_base", "target": kb["name"], "options": KB_OPTIONS},
    )
    assert job["sink"]["target"] == kb["id"]
    run = await wait_run(conn_api, key, await start_run(conn_api, key, job["id"]))
    assert run["status"] == "completed", run
    assert run["result"]["records"] == RECORDS
    docs = await all_ready(sessions, kb["id"], RECORDS)
    assert {d.status for d in docs} == {"ready"}
    assert sorted(d.title for d in docs) == sorted(f"Seeded incident {i}" for i in range(RECORDS))
    first = next(d for d in docs if d.title == "Seeded incident 3")
    assert first.metadata_["urgency"] == "1"
    assert first.metadata_["source"] == {
        "connection": conn["id"],
        "object": "incident",
        "external_id": sys_id_for("incident", 3),
    }
    linked = await links(sessions, kb["id"])
    assert len(linked) == RECORDS
    assert {link.version for link in linked.values()} == {1}
    temporal = await connect(conn_settings)
    assert set((await ingest_executions(temporal, docs)).values()) == {1}
    hits = await conn_api.post(
        f"/v1/knowledge-bases/{kb['id']}/search",
        json={"query": "Seeded incident 3", "mode": "keyword"},
        headers=auth(key),
    )
    assert hits.status_code == 200, hits.text
    assert hits.json()["data"]

    # an updated record replaces its document; the other documents stay as they are
    sim: ServiceNowSimulator = servicenow_sim.app
    sim.update("incident", sys_id_for("incident", 3), {"short_description": "Printer on fire"})
    again = await wait_run(conn_api, key, await start_run(conn_api, key, job["id"]))
    assert again["status"] == "completed", again
    assert again["result"]["records"] == 1
    docs_after = await all_ready(sessions, kb["id"], RECORDS)
    titles = sorted(d.title for d in docs_after)
    assert "Printer on fire" in titles
    assert "Seeded incident 3" not in titles
    moved = (await links(sessions, kb["id"]))[sys_id_for("incident", 3)]
    assert moved.version == 2
    assert moved.document_id != first.id
    assert {d.id for d in docs_after} - {d.id for d in docs} == {moved.document_id}

    # the records endpoint shows each record's document and version, paginated
    page = await conn_api.get(f"/v1/connector-jobs/{job['id']}/records?limit=5", headers=auth(key))
    assert page.status_code == 200, page.text
    seen = list(page.json()["data"])
    cursor = page.json()["next_cursor"]
    while cursor:
        more = await conn_api.get(
            f"/v1/connector-jobs/{job['id']}/records?limit=5&cursor={cursor}", headers=auth(key)
        )
        seen += more.json()["data"]
        cursor = more.json()["next_cursor"]
    assert len(seen) == RECORDS
    assert {r["document_id"] for r in seen} == {str(d.id) for d in docs_after}
    assert next(r for r in seen if r["external_id"] == sys_id_for("incident", 3))["version"] == 2


async def test_page_activity_run_twice_ingests_each_record_once(
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
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim, name="snow-twice"))
    job = await create_job(
        conn_api,
        key,
        connection=conn["id"],
        object="incident",
        page_size=RECORDS,
        sink={"type": "knowledge_base", "target": kb["id"]},
    )
    wid = f"connector_sync:{tenant_id}:{job['id']}.twice"
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=wid)
    await env.run(
        acts.connector_sync_begin, BeginInput(tenant_id=tenant_id, job_id=job["id"], workflow_id=wid, seq=1)
    )
    page = PageInput(
        tenant_id=tenant_id, job_id=job["id"], workflow_id=wid, expected_pages=0, page_size=RECORDS, seq=2
    )

    async def dies(*_: Any, **__: Any) -> int:
        raise RuntimeError("worker killed after the page's commit")

    monkeypatch.setattr(connector_activities, "start_ingestions", dies)
    with pytest.raises(RuntimeError):
        await env.run(acts.connector_sync_page, page)
    pending = await documents(sessions, kb["id"])
    assert len(pending) == RECORDS
    assert {d.status for d in pending} == {"pending"}  # committed with the page, not ingested yet
    monkeypatch.undo()

    retried = await env.run(acts.connector_sync_page, page)
    assert retried.replayed
    assert retried.records == RECORDS
    assert retried.documents == RECORDS  # the retry started the ingestions the first attempt lost
    again = await env.run(acts.connector_sync_page, page)
    assert again.replayed
    docs = await all_ready(sessions, kb["id"], RECORDS)
    assert len({d.sha256 for d in docs}) == RECORDS
    assert len(await links(sessions, kb["id"])) == RECORDS
    temporal = await connect(conn_settings)
    assert set((await ingest_executions(temporal, docs)).values()) == {1}
    async with sessions() as session:
        total = await session.scalar(
            select(func.count()).select_from(KbDocument).where(KbDocument.kb_id == uuid.UUID(kb["id"]))
        )
    assert total == RECORDS


async def test_m365_files_are_downloaded_into_the_knowledge_base(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    m365_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(conn_api, key)
    sim: M365Simulator = m365_sim.app
    conn = await create_connection(
        conn_api,
        key,
        {
            "name": "m365",
            "type": "m365",
            "config": {
                "tenant_id": sim.tenant,
                "authority_url": m365_sim.base_url,
                "graph_url": m365_sim.base_url,
                "drive_id": DRIVE,
            },
            "credentials": {"client_id": sim.client_id, "client_secret": sim.client_secret},
        },
    )
    job = await create_job(
        conn_api,
        key,
        connection=conn["id"],
        object="drive_items",
        page_size=4,
        sink={"type": "knowledge_base", "target": kb["id"]},
    )
    run = await wait_run(conn_api, key, await start_run(conn_api, key, job["id"]))
    assert run["status"] == "completed", run
    docs = await all_ready(sessions, kb["id"], 6)
    assert sorted(d.title for d in docs) == [f"doc-{i:05d}.txt" for i in range(6)]
    assert {d.content_type for d in docs} == {"text/plain"}

    sim.touch(item_id(1), b"Rewritten document one\n")
    with sim.lock:  # as the simulator's DELETE does: the deletion appears in the next delta
        sim.seq += 1
        sim.items[item_id(2)].update(deleted={"state": "deleted"}, _seq=sim.seq)
    again = await wait_run(conn_api, key, await start_run(conn_api, key, job["id"]))
    assert again["status"] == "completed", again
    after = await all_ready(sessions, kb["id"], 5)
    names = sorted(d.title for d in after)
    assert "doc-00002.txt" not in names
    assert names.count("doc-00001.txt") == 1
    rewritten = next(d for d in after if d.title == "doc-00001.txt")
    assert rewritten.sha256 not in {d.sha256 for d in docs}
    linked = await links(sessions, kb["id"])
    assert item_id(2) not in linked
    assert linked[item_id(1)].version == 2


async def test_dataset_sink_one_version_per_run(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
    acts: ConnectorActivities,
) -> None:
    key = await make_key(tenant_id)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim, name="snow-ds"))
    dataset = f"incidents-{uuid.uuid4().hex[:6]}"
    options = {
        "input": "{{ record.short_description }}",
        "expected": "urgency {{ record.urgency }}",
        "tags": ["impact-{{ record.impact }}"],
    }
    bad = await conn_api.post(
        "/v1/connector-jobs",
        json={"connection": conn["id"], "object": "incident", "sink": {"type": "dataset", "target": dataset}},
        headers=auth(key),
    )
    assert bad.status_code == 422  # a dataset needs at least the input template
    job = await create_job(
        conn_api,
        key,
        connection=conn["id"],
        object="incident",
        page_size=5,
        sink={"type": "dataset", "target": dataset, "options": options},
    )
    wid = await start_run(conn_api, key, job["id"])
    run = await wait_run(conn_api, key, wid)
    assert run["status"] == "completed", run
    assert run["result"]["dataset_version"] == 1
    got = await conn_api.get(f"/v1/datasets/{dataset}", headers=auth(key))
    assert got.status_code == 200, got.text
    async with sessions() as session:
        cases = list(
            await session.scalars(
                select(EvalDatasetCase).where(
                    EvalDatasetCase.tenant_id == tenant_id, EvalDatasetCase.dataset_id == dataset
                )
            )
        )
    assert len(cases) == RECORDS
    case = next(c for c in cases if c.case_id == sys_id_for("incident", 4))
    assert case.data["input"] == "Seeded incident 4"
    assert case.data["expected"] == "urgency 2"
    assert case.data["tags"] == ["impact-2"]

    # a retried snapshot of the same run creates nothing; the next run adds version 2
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=wid)
    retried = await env.run(
        acts.connector_sync_snapshot, SnapshotInput(tenant_id=tenant_id, job_id=job["id"], workflow_id=wid)
    )
    assert retried.replayed
    assert retried.version == 1
    second = await wait_run(conn_api, key, await start_run(conn_api, key, job["id"]))
    assert second["result"]["dataset_version"] == 2
    async with sessions() as session:
        versions = list(
            await session.scalars(
                select(EvalDatasetVersion.version).where(
                    EvalDatasetVersion.tenant_id == tenant_id, EvalDatasetVersion.dataset_id == dataset
                )
            )
        )
    assert sorted(versions) == [1, 2]


async def test_records_endpoints_paginate_and_are_tenant_scoped(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
) -> None:
    key = await make_key(tenant_id)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim, name="snow-rec"))
    job = await create_job(conn_api, key, connection=conn["id"], object="incident", page_size=50)
    assert (await wait_run(conn_api, key, await start_run(conn_api, key, job["id"])))["status"] == "completed"
    for path in (
        f"/v1/connector-jobs/{job['id']}/records",
        f"/v1/connections/{conn['id']}/records?object=incident",
    ):
        sep = "&" if "?" in path else "?"
        seen: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            url = f"{path}{sep}limit=5" + (f"&cursor={cursor}" if cursor else "")
            response = await conn_api.get(url, headers=auth(key))
            assert response.status_code == 200, response.text
            seen += response.json()["data"]
            cursor = response.json()["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == RECORDS
        assert len({r["external_id"] for r in seen}) == RECORDS
        assert seen[0]["data"]["short_description"].startswith("Seeded incident")
        assert support.SN_PASSWORD not in str(seen)
        other = await make_key(f"{tenant_id}-x")
        assert (await conn_api.get(path, headers=auth(other))).status_code == 404
    bad = await conn_api.get(f"/v1/connector-jobs/{job['id']}/records?cursor=notacursor", headers=auth(key))
    assert bad.status_code == 400


async def test_schedule_update_pause_unpause_and_remove(
    conn_api: httpx.AsyncClient,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    conn_settings: Settings,
) -> None:
    key = await make_key(tenant_id)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim, name="snow-sched"))
    job = await create_job(conn_api, key, connection=conn["id"], object="incident")
    assert job["schedule_id"] is None
    temporal = await connect(conn_settings)
    added = await conn_api.patch(
        f"/v1/connector-jobs/{job['id']}", json={"schedule": {"interval_s": 3600}}, headers=auth(key)
    )
    assert added.status_code == 200, added.text
    sid = added.json()["schedule_id"]
    handle = temporal.get_schedule_handle(sid)
    assert [i.every.total_seconds() for i in (await handle.describe()).schedule.spec.intervals] == [3600]

    paused = await conn_api.post(f"/v1/connector-jobs/{job['id']}/schedule/pause", headers=auth(key))
    assert paused.status_code == 200
    assert paused.json()["schedule"]["paused"] is True
    assert (await handle.describe()).schedule.state.paused

    changed = await conn_api.patch(
        f"/v1/connector-jobs/{job['id']}",
        json={"schedule": {"cron": "30 2 * * *", "overlap": "buffer_one"}},
        headers=auth(key),
    )
    assert changed.status_code == 200, changed.text
    described = (await handle.describe()).schedule
    assert list(described.spec.cron_expressions) == ["30 2 * * *"] or described.spec.calendars
    assert described.spec.intervals == []
    assert described.policy.overlap.name == "BUFFER_ONE"
    assert described.state.paused  # an update keeps the pause unless it sets it

    resumed = await conn_api.post(f"/v1/connector-jobs/{job['id']}/schedule/unpause", headers=auth(key))
    assert resumed.status_code == 200
    assert not (await handle.describe()).schedule.state.paused

    other = await make_key(f"{tenant_id}-y")
    for method, path in (
        ("PATCH", f"/v1/connector-jobs/{job['id']}"),
        ("POST", f"/v1/connector-jobs/{job['id']}/schedule/pause"),
    ):
        response = await conn_api.request(method, path, json={"schedule": None}, headers=auth(other))
        assert response.status_code == 404

    removed = await conn_api.patch(
        f"/v1/connector-jobs/{job['id']}", json={"schedule": None}, headers=auth(key)
    )
    assert removed.status_code == 200
    assert removed.json()["schedule_id"] is None
    assert [s async for s in await temporal.list_schedules(f"ScheduleId = '{sid}'")] == []
    no_schedule = await conn_api.post(f"/v1/connector-jobs/{job['id']}/schedule/pause", headers=auth(key))
    assert no_schedule.status_code == 404
