"""Crash test: kill -9 the worker during a fan-out; a new worker finishes the run, billing once.

The worker runs as a real subprocess (``python -m workers.main``) pointed at the session's
servers. A plan of two dependent subtasks, each fanned out to three slow simulated models
(1.5 s per call), is killed while the second fan-out is in flight. A new worker resumes it:
the finished calls come from the history (or, for a call that finished but was never reported,
from ``model_calls``), the lost ones are made again, and the answer equals the one of a run
that never crashed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client
from temporalio.worker import Worker

from core.config import Settings
from core.orchestration.contracts import Plan, Strategy, Subtask
from tests.conftest import FIXTURES
from tests.workflows.orchestration_support import (
    MINI,
    SLOW,
    model_calls,
    orchestration_input,
    read_text,
    store_task,
)
from workflows.orchestrate import OrchestrationWorkflow

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

PLAN = Plan(
    subtasks=[
        Subtask(id="capital", instruction="What is the capital of France?", answer_type="short"),
        Subtask(id="product", instruction="What is 17 * 23?", answer_type="short", depends_on=["capital"]),
    ]
)


def worker_env(settings: Settings, task_queue: str) -> dict[str, str]:
    ports = settings.ports
    return {
        **os.environ,
        "NEXUS_ENV": "test",
        "NEXUS_HOME": str(settings.home),
        "NEXUS_LOG_JSON": "false",
        "NEXUS_PORTS__POSTGRES": str(ports.postgres),
        "NEXUS_PORTS__REDIS": str(ports.redis),
        "NEXUS_PORTS__TEMPORAL": str(ports.temporal),
        "NEXUS_PORTS__SIMULATOR": str(ports.simulator),
        "NEXUS_PORTS__WORKER_METRICS": "0",
        "NEXUS_PROVIDERS__CATALOG_PATH": str(FIXTURES / "gateway_catalog.yaml"),
        "NEXUS_TEMPORAL__TASK_QUEUE": task_queue,
    }


def start_worker(settings: Settings, task_queue: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.main"],
            cwd=ROOT,
            env=worker_env(settings, task_queue),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_kill_worker_mid_fan_out_resumes_without_paying_twice(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
    tmp_path: Path,
) -> None:
    task = await store_task(sessions, tenant, "Answer two questions, one after the other.")
    inp = orchestration_input(
        tenant, task, plan=PLAN, strategy=Strategy.majority, models=SLOW, synthesizer_model=MINI
    )
    # The reference: the same run on the in-process worker, never interrupted.
    reference = await temporal_client.execute_workflow(
        OrchestrationWorkflow.run,
        inp,
        id=f"nexus:{tenant}:ref-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )
    assert reference.answer is not None
    expected = await read_text(sessions, tenant, reference.answer)

    crash_queue = f"crash-{uuid.uuid4().hex[:8]}"
    run_id = f"nexus:{tenant}:crash-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    first = start_worker(settings, crash_queue, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = await temporal_client.start_workflow(
            OrchestrationWorkflow.run, inp, id=run_id, task_queue=crash_queue
        )

        async def second_fan_out_in_flight() -> bool:
            if len(await model_calls(sessions, run_id)) < len(SLOW):
                return False
            pending = (await handle.describe()).raw_description.pending_activities
            started = [
                p
                for p in pending
                if p.activity_type.name == "call_llm"
                and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            ]
            return len(started) == len(SLOW)

        await wait_for(second_fan_out_in_flight, 60, f"the second fan-out (worker log: {log})")
        await asyncio.sleep(0.5)  # mid-call: the simulated models take 1.5 s
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        assert len(await model_calls(sessions, run_id)) == len(SLOW), (
            "the second fan-out finished before the kill"
        )

        second = start_worker(settings, crash_queue, log)
        result = await asyncio.wait_for(handle.result(), 120)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)

    assert result.answer is not None
    assert await read_text(sessions, tenant, result.answer) == expected
    rows = await model_calls(sessions, run_id)
    keys = [r.call_key for r in rows]
    assert len(keys) == len(set(keys)), f"duplicate billing: {keys}"
    expected_keys = {f"{run_id}:{sid}:{m}" for sid in ("capital", "product") for m in SLOW} | {
        f"{run_id}:synthesis"
    }
    assert set(keys) == expected_keys
    assert sum((r.cost_usd for r in rows), Decimal(0)) == result.cost_usd
    assert result.cost_usd == reference.cost_usd
