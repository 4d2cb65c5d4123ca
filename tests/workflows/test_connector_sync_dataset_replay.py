"""Replay the recorded dataset-sink ConnectorSync history (behind the ``connector-dataset-sink``
patch) on every run; a variant that ends the run without its snapshot must fail.

The recorded run syncs 25 ServiceNow incidents in pages of 10 into a dataset (begin, three
pages, the patch marker, ``connector_sync_snapshot``, finish). Re-record after an intentional,
versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_connector_sync_dataset_replay.py

The recording uses the plain pydantic converter (no encryption codec); it holds ids, counters and
the dataset version only (no credentials, no record data).
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
from tests.workflows.connector_sync_variants import NoSnapshotConnectorSyncWorkflow
from workflows.connector_sync import DATASET_SINK_PATCH, ConnectorSyncWorkflow

HISTORY = Path(__file__).parent / "histories" / "connector_sync_dataset_v1.json"
SYNC_DATASET_V1_ID = "connector_sync:t-replay:job_replay_ds.v1"
PASSWORD = "sn-dataset-secret-Q4m8"
RECORDS = 25


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json(SYNC_DATASET_V1_ID, json.loads(HISTORY.read_text()))


def test_recorded_history_covers_the_dataset_sink() -> None:
    text = HISTORY.read_text()
    events = json.loads(text)["events"]
    types = [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in events
        if "activityTaskScheduledEventAttributes" in e
    ]
    assert types == (
        ["connector_sync_begin"]
        + ["connector_sync_page"] * 3
        + ["connector_sync_snapshot", "connector_sync_finish"]
    )
    payloads = payload_texts(json.loads(text))
    assert any(DATASET_SINK_PATCH in p for p in payloads), "the patch marker is recorded"
    assert any('"dataset_version":1' in p.replace(" ", "") for p in payloads)
    for secret_or_data in (PASSWORD, "Seeded incident"):
        assert secret_or_data not in text
        assert secret_or_data not in "\n".join(payloads)


async def test_recorded_history_replays() -> None:
    replayer = Replayer(workflows=[ConnectorSyncWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history())


async def test_run_without_the_snapshot_fails_replay() -> None:
    replayer = Replayer(workflows=[NoSnapshotConnectorSyncWorkflow], data_converter=pydantic_data_converter)
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
    from core.db.connector_models import ConnectorCheckpoint, ConnectorJob, ConnectorRecordJob
    from core.db.models import Tenant
    from tests.connector_support import connector_settings
    from workers.main import build_worker

    tenant, job_id = "t-replay", "job_replay_ds"
    conn_settings = connector_settings(settings)
    with start(ServiceNowSimulator(records=RECORDS, password=PASSWORD)) as sim:
        async with sessions() as session, session.begin():
            await session.execute(insert(Tenant).values(id=tenant, name="replay").on_conflict_do_nothing())
            for table in (ConnectorCheckpoint, ConnectorRecordJob):
                await session.execute(delete(table).where(table.job_id == job_id))
            await session.execute(delete(ConnectorJob).where(ConnectorJob.id == job_id))
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
                sink_type=SinkType.dataset,
                sink_target=f"replay-{uuid.uuid4().hex[:6]}",
                sink_options={"input": "{{ record.short_description }}"},
                page_size=10,
                max_pages_per_minute=None,
                schedule=None,
                actor="test",
                job_id=job_id,
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
                SyncInput(tenant_id=tenant, job_id=job_id, page_size=10, pages_per_run=5, created_by="test"),
                id=SYNC_DATASET_V1_ID,
                task_queue=queue,
                result_type=SyncResult,
            )
            result = await handle.result()
    assert result.records == RECORDS
    assert result.dataset_version == 1
    history = await handle.fetch_history()
    HISTORY.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
