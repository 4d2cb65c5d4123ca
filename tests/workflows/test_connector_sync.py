"""``ConnectorSync`` end to end against the vendor simulators: paging with continue-as-new,
incremental re-sync, throttling honoured, auth failing fast, a blocking (Salesforce) source,
Temporal Schedules, cancel, and progress in ``/v1/runs`` and its events."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from connectors.simulators.serve import RunningSimulator
from connectors.simulators.servicenow import ServiceNowSimulator, sys_id_for
from core.config import Settings
from core.db.connector_models import ConnectorRecord
from core.temporal.client import connect
from tests import connector_support as support
from tests.conftest import auth
from tests.connector_support import (
    MakeKey,
    create_connection,
    create_job,
    salesforce_body,
    servicenow_body,
    start_run,
    wait_run,
)

servicenow_sim = support.servicenow_sim
salesforce_sim = support.salesforce_sim
conn_api = support.conn_api
conn_worker = support.conn_worker


@pytest_asyncio.fixture(scope="module")
async def conn_settings(settings: Settings, salesforce_sim: RunningSimulator) -> Settings:
    # 57 records in pages of 10 and 2 pages per run: the sync continues as new twice
    return support.connector_settings(settings, ca_bundle=salesforce_sim.ca_path or "", pages_per_run=2)


async def records(sessions: async_sessionmaker[AsyncSession], tenant_id: str) -> list[ConnectorRecord]:
    async with sessions() as session:
        rows = await session.execute(select(ConnectorRecord).where(ConnectorRecord.tenant_id == tenant_id))
        return list(rows.scalars())


async def events(api: httpx.AsyncClient, key: str, wid: str) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/runs/{wid}", headers=auth(key))
    found: list[dict[str, Any]] = response.json()["events"]
    return found


async def test_sync_pages_continues_as_new_and_resyncs_incrementally(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
    conn_settings: Settings,
) -> None:
    key = await make_key(tenant_id)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim))
    job = await create_job(conn_api, key, connection=conn["name"], object="incident", page_size=10)
    wid = await start_run(conn_api, key, job["id"])
    run = await wait_run(conn_api, key, wid)
    assert run["status"] == "completed", run
    assert run["kind"] == "connector_sync"
    assert run["result"]["records"] == 57
    rows = await records(sessions, tenant_id)
    assert len(rows) == 57
    assert len({r.external_id for r in rows}) == 57
    assert all(r.writes == 1 for r in rows)
    got = (await conn_api.get(f"/v1/connector-jobs/{job['id']}", headers=auth(key))).json()
    assert got["pages_done"] == 6
    assert got["records_written"] == 57
    assert got["status"] == "completed"
    assert got["checkpoint"]["sys_id"]
    types = [e["type"] for e in await events(conn_api, key, wid)]
    assert types[0] == "run.started"
    assert types.count("connector.page") == 6
    assert types[-1] == "run.completed"
    # continue-as-new happened: the chain has 3 runs (2 + 2 + 2 pages)
    temporal: Client = await connect(conn_settings)
    runs = [w async for w in temporal.list_workflows(f"WorkflowId = '{wid}'")]
    assert len(runs) == 3

    # incremental: one changed record is read again and updated in place
    sim: ServiceNowSimulator = servicenow_sim.app
    sim.update("incident", sys_id_for("incident", 5), {"urgency": "1"})
    again = await wait_run(conn_api, key, await start_run(conn_api, key, job["id"]))
    assert again["status"] == "completed"
    assert again["result"]["records"] == 1
    rows = await records(sessions, tenant_id)
    assert len(rows) == 57
    changed = next(r for r in rows if r.external_id == sys_id_for("incident", 5))
    assert changed.writes == 2
    assert changed.data["urgency"] == "1"


async def test_throttling_is_retried_after_retry_after(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
    conn_settings: Settings,
) -> None:
    key = await make_key(tenant_id)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim))
    job = await create_job(conn_api, key, connection=conn["id"], object="incident", page_size=30)
    sim: ServiceNowSimulator = servicenow_sim.app
    sim.faults.throttle_next(2, retry_after=1)
    sim.faults.unavailable_next(0)
    wid = await start_run(conn_api, key, job["id"])
    run = await wait_run(conn_api, key, wid)
    assert run["status"] == "completed", run
    assert sim.faults.throttle == 0
    assert len(await records(sessions, tenant_id)) == 57
    # the page activity failed twice as throttled, each retried after the vendor's delay
    temporal: Client = await connect(conn_settings)
    history = await temporal.get_workflow_handle(wid).fetch_history()
    failures = [
        e.activity_task_failed_event_attributes.failure
        for e in history.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert [f.application_failure_info.type for f in failures] == []  # attempts retry inside one task
    starts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(starts) == 3


async def test_auth_failure_fails_fast_with_a_clear_message(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    conn_settings: Settings,
) -> None:
    key = await make_key(tenant_id)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim, password="nope"))
    job = await create_job(conn_api, key, connection=conn["id"], object="incident")
    wid = await start_run(conn_api, key, job["id"])
    run = await wait_run(conn_api, key, wid)
    assert run["status"] == "failed"
    assert "User Not Authenticated" in run["error"] or "auth" in run["error"].lower()
    temporal: Client = await connect(conn_settings)
    history = await temporal.get_workflow_handle(wid).fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) == 1  # never retried
    got = (await conn_api.get(f"/v1/connector-jobs/{job['id']}", headers=auth(key))).json()
    assert got["status"] == "failed"
    assert got["last_error"]


async def test_blocking_salesforce_sync_runs_on_the_thread_pool(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    salesforce_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
    conn_settings: Settings,
) -> None:
    key = await make_key(tenant_id)
    conn = await create_connection(conn_api, key, salesforce_body(salesforce_sim))
    job = await create_job(conn_api, key, connection=conn["id"], object="Case", page_size=4)
    wid = await start_run(conn_api, key, job["id"])
    run = await wait_run(conn_api, key, wid)
    assert run["status"] == "completed", run
    rows = await records(sessions, tenant_id)
    assert len(rows) == 10
    assert all(r.writes == 1 for r in rows)
    temporal: Client = await connect(conn_settings)
    history = await temporal.get_workflow_handle(wid).fetch_history()
    names = {
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    assert "connector_sync_page_blocking" in names
    assert "connector_sync_page" not in names


async def test_schedule_starts_runs_and_is_deleted_with_the_job(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    conn_settings: Settings,
) -> None:
    key = await make_key(tenant_id)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim))
    bad = await conn_api.post(
        "/v1/connector-jobs",
        json={
            "connection": conn["id"],
            "object": "incident",
            "schedule": {"cron": "0 * * * *", "interval_s": 60},
        },
        headers=auth(key),
    )
    assert bad.status_code == 422
    job = await create_job(
        conn_api, key, connection=conn["id"], object="incident", page_size=50, schedule={"interval_s": 3600}
    )
    assert job["schedule_id"] == f"connector-schedule:{tenant_id}:{job['id']}"
    temporal: Client = await connect(conn_settings)
    handle = temporal.get_schedule_handle(job["schedule_id"])
    description = await handle.describe()
    assert description.schedule.policy.overlap.name == "SKIP"
    await handle.trigger()
    run: dict[str, Any] | None = None
    for _ in range(200):
        listed = await conn_api.get("/v1/runs?kind=connector_sync", headers=auth(key))
        data = listed.json()["data"]
        if data:
            run = await wait_run(conn_api, key, data[0]["id"])
            break
        await asyncio.sleep(0.2)
    assert run is not None
    assert run["status"] == "completed"
    assert run["created_by"] == "schedule"
    assert run["id"].startswith(f"connector_sync:{tenant_id}:{job['id']}.sched")
    assert (await conn_api.delete(f"/v1/connector-jobs/{job['id']}", headers=auth(key))).status_code == 204
    assert [s async for s in await temporal.list_schedules(f"ScheduleId = '{job['schedule_id']}'")] == []


async def test_jobs_are_tenant_scoped(
    conn_api: httpx.AsyncClient, make_key: MakeKey, tenant_id: str, servicenow_sim: RunningSimulator
) -> None:
    key = await make_key(tenant_id)
    conn = await create_connection(conn_api, key, servicenow_body(servicenow_sim))
    job = await create_job(conn_api, key, connection=conn["id"], object="incident")
    other = await make_key(f"{tenant_id}-b")
    for method, path in (
        ("GET", f"/v1/connector-jobs/{job['id']}"),
        ("POST", f"/v1/connector-jobs/{job['id']}/runs"),
        ("POST", f"/v1/connector-jobs/{job['id']}/cancel"),
        ("DELETE", f"/v1/connector-jobs/{job['id']}"),
    ):
        assert (await conn_api.request(method, path, headers=auth(other))).status_code == 404
    foreign = await conn_api.post(
        "/v1/connector-jobs", json={"connection": conn["id"], "object": "incident"}, headers=auth(other)
    )
    assert foreign.status_code == 404
    unknown_object = await conn_api.post(
        "/v1/connector-jobs", json={"connection": conn["id"], "object": "sys_user"}, headers=auth(key)
    )
    assert unknown_object.status_code == 422
