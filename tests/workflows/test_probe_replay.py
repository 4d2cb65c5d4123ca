"""Replay the recorded Probe history on every run; a reordered variant must fail replay.

Re-record after an intentional, versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_probe_replay.py

The recording uses the plain pydantic converter (no encryption codec), so the committed JSON
does not depend on a session's codec key.
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
from core.contracts import ProbeInput, ProbeResult
from tests.workflows.probe_variants import ReorderedProbeWorkflow
from workers.main import build_worker
from workflows.probe import ProbeWorkflow

HISTORY = Path(__file__).parent / "histories" / "probe_v1.json"
PROBE_V1_ID = "probe:t-replay:v1"


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json(PROBE_V1_ID, json.loads(HISTORY.read_text()))


async def test_recorded_history_replays() -> None:
    replayer = Replayer(workflows=[ProbeWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history())


async def test_non_deterministic_change_fails_replay() -> None:
    replayer = Replayer(workflows=[ReorderedProbeWorkflow], data_converter=pydantic_data_converter)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history())


@pytest.mark.skipif(not os.environ.get("NEXUS_RECORD_HISTORIES"), reason="records histories on demand")
async def test_record_history(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
) -> None:
    from sqlalchemy.dialects.postgresql import insert

    from core.db.models import Tenant

    async with sessions() as session, session.begin():
        await session.execute(insert(Tenant).values(id="t-replay", name="replay").on_conflict_do_nothing())
    client = await Client.connect(
        settings.temporal.address,
        namespace=settings.temporal.namespace,
        data_converter=pydantic_data_converter,
    )
    queue = f"record-{uuid.uuid4().hex[:8]}"
    wid = PROBE_V1_ID
    async with build_worker(client, settings, sessions, redis_client, queue):
        handle = await client.start_workflow(
            ProbeWorkflow.run,
            ProbeInput(tenant_id="t-replay"),
            id=wid,
            task_queue=queue,
            result_type=ProbeResult,
        )
        await handle.result()
    history = await handle.fetch_history()
    HISTORY.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
