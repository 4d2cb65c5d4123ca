"""Replay the recorded ConnectorSync history on every run; a variant that skips claiming the job
must fail.

The recorded run syncs 25 ServiceNow incidents in pages of 10 (begin, three pages, finish).
Re-record after an intentional, versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_connector_sync_replay.py

The recording uses the plain pydantic converter (no encryption codec), so the committed JSON
does not depend on a session's codec key; it holds ids and counters only (no credentials).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from core.config import Settings
from tests.connector_support import payload_texts
from tests.workflows.connector_sync_variants import NoBeginConnectorSyncWorkflow
from workflows.connector_sync import ConnectorSyncWorkflow

HISTORY = Path(__file__).parent / "histories" / "connector_sync_v1.json"
SYNC_V1_ID = "connector_sync:t-replay:job_replay.v1"
PASSWORD = "sn-secret"


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json(SYNC_V1_ID, json.loads(HISTORY.read_text()))


def test_recorded_history_covers_every_step() -> None:
    types = [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in json.loads(HISTORY.read_text())["events"]
        if "activityTaskScheduledEventAttributes" in e
    ]
    assert types == ["connector_sync_begin"] + ["connector_sync_page"] * 3 + ["connector_sync_finish"]


def test_recorded_history_holds_no_credentials() -> None:
    text = HISTORY.read_text()
    payloads = payload_texts(json.loads(text))
    assert payloads, "the history's payloads are decoded"
    assert any("job_replay" in p for p in payloads)  # the decoding works: ids are visible
    assert PASSWORD not in text
    assert PASSWORD not in "\n".join(payloads)


async def test_recorded_history_replays() -> None:
    replayer = Replayer(workflows=[ConnectorSyncWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history())


async def test_non_deterministic_change_fails_replay() -> None:
    replayer = Replayer(workflows=[NoBeginConnectorSyncWorkflow], data_converter=pydantic_data_converter)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history())


@pytest.mark.skipif(not os.environ.get("NEXUS_RECORD_HISTORIES"), reason="records histories on demand")
async def test_record_history(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], redis_client: Redis
) -> None:
    from sqlalchemy import delete
    from sqlalchemy.dialects.postgresql import insert

    from connectors.jobs import JobRepository
    from connectors.simulators.serve import start
    from connectors.simulators.servicenow import ServiceNowSimulator
    from connectors.store import ConnectionRepository, CredentialCipher
    from core.connector_contracts import SinkType, SyncInput, SyncResult
    from core.db.connector_models import ConnectorCheckpoint, ConnectorJob
    from core.db.models import Tenant
    from tests.connector_support import connector_settings
    from workers.main import build_worker

    tenant = "t-replay"
    conn_settings = connector_settings(settings)
    with start(ServiceNowSimulator(records=25)) as sim:
        async with sessions() as session, session.begin():
            await session.execute(insert(Tenant).values(id=tenant, name="replay").on_conflict_do_nothing())
            await session.execute(
                delete(ConnectorCheckpoint).where(ConnectorCheckpoint.job_id == "job_replay")
            )
            await session.execute(delete(ConnectorJob).where(ConnectorJob.id == "job_replay"))
            conn = await ConnectionRepository(session, CredentialCipher.from_settings(settings)).create(
                tenant_id=tenant,
                name=f"snow-{uuid.uuid4().hex[:6]}",
                type_="servicenow",
                config={"instance_url": sim.base_url},
                credentials={"username": "integration", "password": PASSWORD},
                actor="test",
            )
            await JobRepository(session).create(
                tenant_id=tenant,
                connection_id=conn.id,
                obj="incident",
                sink_type=SinkType.records,
                sink_target="",
                page_size=10,
                max_pages_per_minute=None,
                schedule=None,
                actor="test",
                job_id="job_replay",
            )
        client = await Client.connect(
            settings.temporal.address,
            namespace=settings.temporal.namespace,
            data_converter=pydantic_data_converter,
        )
        queue = f"record-{uuid.uuid4().hex[:8]}"
        async with build_worker(client, conn_settings, sessions, redis_client, queue):
            handle = await client.start_workflow(
                ConnectorSyncWorkflow.run,
                SyncInput(
                    tenant_id=tenant, job_id="job_replay", page_size=10, pages_per_run=5, created_by="test"
                ),
                id=SYNC_V1_ID,
                task_queue=queue,
                result_type=SyncResult,
            )
            result = await handle.result()
    assert result.records == 25
    history = await handle.fetch_history()
    HISTORY.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
