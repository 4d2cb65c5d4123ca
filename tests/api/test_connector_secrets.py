"""Connection credentials never leave the credentials column: not in logs, run events, Temporal
payloads (raw or decrypted with the codec), API responses, audit data or other tables.

One connection per vendor is created with distinctive secrets, then used by a sync run (async
connector), a blocking sync (Salesforce), a pipeline creating a case and an incident that fails
and compensates, and the test endpoint with wrong credentials (error paths). Everything those
produced is then searched for the secret strings. A second test runs syncs through a real worker
process logging at DEBUG to a file and searches that file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError

from connectors.jobs import JobRepository
from connectors.simulators.serve import RunningSimulator
from connectors.store import ConnectionRepository, CredentialCipher
from core.config import Settings
from core.connector_contracts import WORKFLOW_NAME, SinkType, SyncInput, SyncResult
from core.temporal.client import connect, make_codec
from tests import connector_support as support
from tests.conftest import auth
from tests.connector_support import (
    SF_SECRET,
    SN_PASSWORD,
    MakeKey,
    create_connection,
    create_job,
    salesforce_body,
    servicenow_body,
    start_run,
    wait_run,
)
from tests.e2e.test_pipeline_crash import ROOT, worker_env
from tests.workflows.conftest import temporal_client, tenant
from tests.workflows.pipeline_support import new_wid, run_input
from tests.workflows.test_connector_saga import saga_pipeline
from workflows.pipeline import PipelineWorkflow

servicenow_sim = support.servicenow_sim
salesforce_sim = support.salesforce_sim
conn_settings = support.conn_settings
conn_api = support.conn_api
conn_worker = support.conn_worker
__all__ = ["temporal_client", "tenant"]

SECRETS = (SN_PASSWORD, SF_SECRET)


def payloads_of(message: Message) -> list[Payload]:
    """Every ``Payload`` anywhere inside a protobuf message (history events nest them deeply)."""
    found: list[Payload] = []
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            items: Any = [value]
        elif hasattr(value, "values"):  # a map field
            items = value.values()
        else:  # a repeated field
            items = value
        for item in items:
            if isinstance(item, Payload):
                found.append(item)
            elif isinstance(item, Message):
                found.extend(payloads_of(item))
    return found


def assert_clean(blob: str | bytes, where: str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for secret in SECRETS:
        assert secret.encode() not in data, f"a credential leaked into {where}"


async def test_credentials_never_leave_the_credentials_column(
    conn_api: httpx.AsyncClient,
    conn_worker: None,
    conn_settings: Settings,
    make_key: MakeKey,
    tenant_id: str,
    servicenow_sim: RunningSimulator,
    salesforce_sim: RunningSimulator,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await make_key(tenant_id)
    responses: list[str] = []

    async def call(method: str, path: str, **kw: Any) -> httpx.Response:
        response = await conn_api.request(method, path, headers=auth(key), **kw)
        responses.append(response.text)
        return response

    sn = await create_connection(conn_api, key, servicenow_body(servicenow_sim))
    sf = await create_connection(conn_api, key, salesforce_body(salesforce_sim))
    responses += [str(sn), str(sf)]
    for conn in (sn, sf):
        await call("GET", f"/v1/connections/{conn['id']}")
        await call("POST", f"/v1/connections/{conn['id']}/test")
    await call("GET", "/v1/connections")
    # an error path: wrong credentials, then restored
    await call(
        "PATCH",
        f"/v1/connections/{sn['id']}",
        json={"credentials": {"username": "integration", "password": SN_PASSWORD + "-wrong"}},
    )
    await call("POST", f"/v1/connections/{sn['id']}/test")
    await call(
        "PATCH",
        f"/v1/connections/{sn['id']}",
        json={"credentials": {"username": "integration", "password": SN_PASSWORD}},
    )

    wids = []
    for conn, obj in ((sn, "incident"), (sf, "Case")):
        job = await create_job(conn_api, key, connection=conn["id"], object=obj, page_size=20)
        wid = await start_run(conn_api, key, job["id"])
        run = await wait_run(conn_api, key, wid)
        assert run["status"] == "completed", run
        wids.append(wid)
        await call("GET", f"/v1/connector-jobs/{job['id']}")
        await call("GET", f"/v1/runs/{wid}")
        await call("GET", f"/v1/runs/{wid}/events")

    temporal: Client = await connect(conn_settings)
    pipeline_wid = new_wid(tenant_id)
    with pytest.raises(WorkflowFailureError):
        await temporal.execute_workflow(
            PipelineWorkflow.run,
            run_input(tenant_id, saga_pipeline(fail=True), {"ticket": "S-1"}),
            id=pipeline_wid,
            task_queue=conn_settings.temporal.task_queue,
        )
    wids.append(pipeline_wid)
    await call("GET", f"/v1/runs/{pipeline_wid}")

    for body in responses:
        assert_clean(body, "an API response")
    assert_clean(caplog.text, "the logs")

    codec = make_codec(conn_settings.security)
    decoded_with_tenant = 0
    for wid in wids:
        async for handle in temporal.list_workflows(f"WorkflowId = '{wid}'"):
            history = await temporal.get_workflow_handle(wid, run_id=handle.run_id).fetch_history()
            for event in history.events:
                assert_clean(event.SerializeToString(), f"the Temporal history of {wid} (raw)")
                for payload in payloads_of(event):
                    decoded = codec.decrypt(payload).SerializeToString()
                    assert_clean(decoded, f"a Temporal payload of {wid} (decrypted)")
                    decoded_with_tenant += tenant_id.encode() in decoded
    assert decoded_with_tenant > 10  # the search really read decrypted workflow inputs

    async with sessions() as session:
        for table, column in (
            ("run_events", "data::text"),
            ("runs", "coalesce(result::text, '') || input_summary::text || coalesce(error, '')"),
            ("audit_events", "data::text"),
            ("pipeline_effects", "response::text"),
            ("connector_records", "data::text"),
            ("connections", "config::text || encode(credentials_ciphertext, 'escape')"),
        ):
            rows = await session.execute(
                text(f"SELECT {column} FROM {table} WHERE tenant_id = :t"),  # noqa: S608 (fixed names)
                {"t": tenant_id},
            )
            for (value,) in rows:
                assert_clean(value or "", f"table {table}")


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.main"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def test_worker_process_log_holds_no_credentials(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
    servicenow_sim: RunningSimulator,
    tmp_path: Path,
) -> None:
    """A real ``python -m workers.main`` process at DEBUG writes its log file; a good sync and a
    sync refused for wrong credentials (the wrong password starts with the real one) leave no
    credential in it."""
    async with sessions() as session, session.begin():
        repo = ConnectionRepository(session, CredentialCipher.from_settings(settings))
        jobs = JobRepository(session)
        job_ids = []
        for name, password in (("snow-log", SN_PASSWORD), ("snow-log-bad", SN_PASSWORD + "-wrong")):
            conn = await repo.create(
                tenant_id=tenant,
                name=name,
                type_="servicenow",
                config={"instance_url": servicenow_sim.base_url},
                credentials={"username": "integration", "password": password},
                actor="test",
            )
            job = await jobs.create(
                tenant_id=tenant,
                connection_id=conn.id,
                obj="incident",
                sink_type=SinkType.records,
                sink_target="",
                page_size=20,
                max_pages_per_minute=None,
                schedule=None,
                actor="test",
            )
            job_ids.append(job.id)
    queue = f"secrets-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    env = {**worker_env(settings, queue), "NEXUS_LOG_LEVEL": "DEBUG"}
    env["NEXUS_CONNECTORS__ALLOWED_HOSTS"] = json.dumps(["127.0.0.1"])
    proc = _start_worker(env, log)
    try:
        results = []
        for job_id in job_ids:
            handle = await temporal_client.start_workflow(
                WORKFLOW_NAME,
                SyncInput(tenant_id=tenant, job_id=job_id, page_size=20),
                id=f"connector_sync:{tenant}:{job_id}.log",
                task_queue=queue,
                result_type=SyncResult,
            )
            try:
                results.append((await asyncio.wait_for(handle.result(), 120)).status)
            except WorkflowFailureError as exc:
                results.append(f"failed: {exc.cause}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    assert results[0] == "completed"
    assert results[1].startswith("failed")
    written = log.read_bytes()
    assert b"worker started" in written  # the search below really read the worker's log
    assert b"DEBUG" in written  # at DEBUG level (the HTTP clients log their requests there)
    assert_clean(written, "the worker's log file")
