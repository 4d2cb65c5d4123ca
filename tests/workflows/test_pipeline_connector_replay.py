"""Replay the recorded history of a Pipeline with connector steps (behind the ``connector-steps``
patch) on every run; a variant that skips ``connector_plan`` must fail replay.

The recorded run creates a ServiceNow incident (``connector_plan`` + ``connector_action``), then
fails on an http step to the cloud metadata address (refused), so the saga runs the incident's
declared undo (``cancel_incident`` through ``connector_action`` with ``undo_of``). Re-record after
an intentional, versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_pipeline_connector_replay.py

The recording uses the plain pydantic converter (no encryption codec); it holds step
definitions, ids and vendor outputs, never the connection's credentials.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from connectors.simulators.serve import start
from connectors.simulators.servicenow import ServiceNowSimulator
from connectors.store import ConnectionRepository, CredentialCipher
from core.config import Settings
from tests import connector_support as support
from tests.workflows.pipeline_connector_variants import UnplannedConnectorPipelineWorkflow
from tests.workflows.pipeline_support import run_input
from workers.main import build_worker
from workflows.pipeline import PipelineWorkflow

HISTORY = Path(__file__).parent / "histories" / "pipeline_connector_v1.json"
PIPELINE_CONNECTOR_V1_ID = "pipeline:t-replay:connector-v1"
PASSWORD = "sn-replay-secret-Hx72"


def definition() -> dict[str, Any]:
    return {
        "name": "connector-replay",
        "inputs": {"ticket": {"type": "string"}},
        "steps": [
            {
                "id": "incident",
                "type": "connector",
                "connection": "snow-replay",
                "action": "create_incident",
                "input": {"short_description": "Outage {{ inputs.ticket }}"},
            },
            {"id": "boom", "type": "http", "method": "GET", "url": "http://169.254.169.254/latest"},
        ],
    }


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json(PIPELINE_CONNECTOR_V1_ID, json.loads(HISTORY.read_text()))


def test_recorded_history_covers_the_connector_path() -> None:
    text = HISTORY.read_text()
    events = json.loads(text)["events"]
    types = [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in events
        if "activityTaskScheduledEventAttributes" in e
    ]
    assert "connector_plan" in types
    assert types.count("connector_action") == 2  # the action and its declared undo
    markers = [e for e in events if "markerRecordedEventAttributes" in e]
    assert markers, "the connector-steps patch marker is recorded"
    assert PASSWORD not in text
    assert PASSWORD not in "\n".join(_payload_texts(json.loads(text)))


def _payload_texts(node: Any) -> list[str]:
    """Every payload of the history, decoded (payload data is base64 in the JSON form)."""
    found: list[str] = []
    if isinstance(node, dict):
        if "metadata" in node and isinstance(node.get("data"), str):
            found.append(base64.b64decode(node["data"]).decode("utf-8", "replace"))
        for value in node.values():
            found += _payload_texts(value)
    elif isinstance(node, list):
        for value in node:
            found += _payload_texts(value)
    return found


async def test_recorded_history_replays() -> None:
    replayer = Replayer(workflows=[PipelineWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history())


async def test_non_deterministic_change_fails_replay() -> None:
    replayer = Replayer(
        workflows=[UnplannedConnectorPipelineWorkflow], data_converter=pydantic_data_converter
    )
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history())


@pytest.mark.skipif(not os.environ.get("NEXUS_RECORD_HISTORIES"), reason="records histories on demand")
async def test_record_history(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], redis_client: Redis
) -> None:
    from sqlalchemy.dialects.postgresql import insert

    from core.db.models import Tenant

    conn_settings = support.connector_settings(settings)
    with start(ServiceNowSimulator(records=1, password=PASSWORD)) as sim:
        async with sessions() as session, session.begin():
            await session.execute(
                insert(Tenant).values(id="t-replay", name="replay").on_conflict_do_nothing()
            )
            repo = ConnectionRepository(session, CredentialCipher.from_settings(conn_settings))
            existing = await repo.find("t-replay", "snow-replay")
            if existing is not None:
                await repo.update(
                    "t-replay", existing.id, actor="test", config={"instance_url": sim.base_url}
                )
            else:
                await repo.create(
                    tenant_id="t-replay",
                    name="snow-replay",
                    type_="servicenow",
                    config={"instance_url": sim.base_url},
                    credentials={"username": "integration", "password": PASSWORD},
                    actor="test",
                )
        client = await Client.connect(
            settings.temporal.address,
            namespace=settings.temporal.namespace,
            data_converter=pydantic_data_converter,
        )
        queue = f"record-{uuid.uuid4().hex[:8]}"
        async with build_worker(client, conn_settings, sessions, redis_client, queue):
            handle = await client.start_workflow(
                PipelineWorkflow.run,
                run_input("t-replay", definition(), {"ticket": "T-9"}),
                id=PIPELINE_CONNECTOR_V1_ID,
                task_queue=queue,
            )
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        sn: ServiceNowSimulator = sim.app
        assert [r["state"] for r in sn.tables["incident"].values() if "T-9" in r["short_description"]] == [
            "8"
        ]
    history = await handle.fetch_history()
    HISTORY.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
