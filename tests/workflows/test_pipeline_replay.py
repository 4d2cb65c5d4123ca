"""Replay the recorded Pipeline history on every run; a reordered variant must fail replay.

Re-record after an intentional, versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_pipeline_replay.py

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
from core.pipelines.contracts import PipelineResult
from tests.workflows.pipeline_support import http_step, pipeline_settings, receiver, run_input
from tests.workflows.pipeline_variants import StepsFirstPipelineWorkflow
from workers.main import build_worker
from workflows.pipeline import PipelineWorkflow

HISTORY = Path(__file__).parent / "histories" / "pipeline_v1.json"
PIPELINE_V1_ID = "pipeline:t-replay:v1"


def definition(url: str) -> dict:  # type: ignore[type-arg]
    return {
        "name": "replay",
        "inputs": {"n": {"type": "integer"}},
        "steps": [
            {"id": "double", "type": "transform", "expression": "[inputs.n, inputs.n]"},
            http_step("send", url + "/send", body={"n": "{{ inputs.n }}"}),
            {
                "id": "fan",
                "type": "parallel",
                "branches": [
                    [{"id": "left", "type": "transform", "expression": "steps.double.output[0]"}],
                    [{"id": "right", "type": "wait", "seconds": 0.2}],
                ],
            },
            {
                "id": "pick",
                "type": "branch",
                "cases": [
                    {
                        "when": "inputs.n > `1`",
                        "steps": [{"id": "big", "type": "transform", "expression": "'big'"}],
                    }
                ],
            },
        ],
        "outputs": {"left": "=steps.left.output"},
    }


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json(PIPELINE_V1_ID, json.loads(HISTORY.read_text()))


async def test_recorded_history_replays() -> None:
    replayer = Replayer(workflows=[PipelineWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history())


async def test_non_deterministic_change_fails_replay() -> None:
    replayer = Replayer(workflows=[StepsFirstPipelineWorkflow], data_converter=pydantic_data_converter)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history())


@pytest.mark.skipif(not os.environ.get("NEXUS_RECORD_HISTORIES"), reason="records histories on demand")
async def test_record_history(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], redis_client: Redis
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
    async with (
        receiver() as recv,
        build_worker(client, pipeline_settings(settings), sessions, redis_client, queue),
    ):
        handle = await client.start_workflow(
            PipelineWorkflow.run,
            run_input("t-replay", definition(recv.url), {"n": 3}),
            id=PIPELINE_V1_ID,
            task_queue=queue,
            result_type=PipelineResult,
        )
        result = await handle.result()
    assert result.outputs == {"left": 3}
    history = await handle.fetch_history()
    HISTORY.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
