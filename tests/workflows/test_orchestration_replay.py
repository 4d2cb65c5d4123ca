"""Replay the recorded Orchestration history on every run; a reordered variant must fail replay.

Re-record after an intentional, versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_orchestration_replay.py

The recording uses the plain pydantic converter (no encryption codec), so the committed JSON
does not depend on a session's codec key. The recorded run has two parallel subtasks with two
proposers each, majority consensus and a streamed synthesis.
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
from core.orchestration.contracts import Strategy
from tests.workflows.orchestration_support import (
    GEMINI,
    MINI,
    orchestration_input,
    store_task,
    two_facts_plan,
)
from tests.workflows.orchestration_variants import CatalogFirstOrchestrationWorkflow
from workers.main import build_worker
from workflows.orchestrate import OrchestrationWorkflow

HISTORY = Path(__file__).parent / "histories" / "orchestration_v1.json"
RUN_ID = "nexus:t-replay:orchestration-v1"


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json(RUN_ID, json.loads(HISTORY.read_text()))


async def test_recorded_history_replays() -> None:
    replayer = Replayer(workflows=[OrchestrationWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history())


async def test_non_deterministic_change_fails_replay() -> None:
    replayer = Replayer(workflows=[CatalogFirstOrchestrationWorkflow], data_converter=pydantic_data_converter)
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
    task = await store_task(sessions, "t-replay", "Answer two questions.")
    client = await Client.connect(
        settings.temporal.address,
        namespace=settings.temporal.namespace,
        data_converter=pydantic_data_converter,
    )
    queue = f"record-{uuid.uuid4().hex[:8]}"
    inp = orchestration_input(
        "t-replay",
        task,
        plan=two_facts_plan(),
        strategy=Strategy.majority,
        models=[MINI, GEMINI],
        synthesizer_model=MINI,
    )
    async with build_worker(client, settings, sessions, redis_client, queue):
        handle = await client.start_workflow(OrchestrationWorkflow.run, inp, id=RUN_ID, task_queue=queue)
        await handle.result()
    history = await handle.fetch_history()
    HISTORY.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
