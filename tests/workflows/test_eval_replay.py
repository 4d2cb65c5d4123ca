"""Replay the recorded EvalRun history on every run; a reordered variant must fail replay.

Re-record after an intentional, versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_eval_replay.py

The recording uses the plain pydantic converter (no encryption codec).
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
from evals.targets import EvalRunResult
from tests.workflows.eval_support import eval_settings, eval_sim_port, run_input, seed_dataset
from tests.workflows.eval_variants import PrepareFirstEvalRunWorkflow
from workers.main import build_worker
from workflows.eval_run import EvalRunWorkflow

__all__ = ["eval_settings", "eval_sim_port"]

HISTORY = Path(__file__).parent / "histories" / "eval_run_v1.json"
EVAL_V1_ID = "eval:t-eval-replay:v1"


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json(EVAL_V1_ID, json.loads(HISTORY.read_text()))


async def test_recorded_history_replays() -> None:
    replayer = Replayer(workflows=[EvalRunWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history())


async def test_non_deterministic_change_fails_replay() -> None:
    replayer = Replayer(workflows=[PrepareFirstEvalRunWorkflow], data_converter=pydantic_data_converter)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history())


@pytest.mark.skipif(not os.environ.get("NEXUS_RECORD_HISTORIES"), reason="records histories on demand")
async def test_record_history(
    eval_settings: Settings, sessions: async_sessionmaker[AsyncSession], redis_client: Redis
) -> None:
    from sqlalchemy.dialects.postgresql import insert

    from core.db.models import Tenant

    tenant = "t-eval-replay"
    async with sessions() as session, session.begin():
        await session.execute(insert(Tenant).values(id=tenant, name="replay").on_conflict_do_nothing())
    await seed_dataset(sessions, tenant)
    client = await Client.connect(
        eval_settings.temporal.address,
        namespace=eval_settings.temporal.namespace,
        data_converter=pydantic_data_converter,
    )
    queue = f"record-{uuid.uuid4().hex[:8]}"
    wid = EVAL_V1_ID
    async with build_worker(client, eval_settings, sessions, redis_client, queue):
        handle = await client.start_workflow(
            EvalRunWorkflow.run,
            run_input(tenant, batch_size=20, batch_concurrency=2),
            id=wid,
            task_queue=queue,
            result_type=EvalRunResult,
        )
        result = await handle.result()
    assert result.status == "completed"
    history = await handle.fetch_history()
    raw = json.loads(history.to_json())
    HISTORY.write_text(json.dumps(raw, indent=1) + "\n")
