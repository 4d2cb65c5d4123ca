"""Crash test: kill -9 the worker mid-run; each case is evaluated and billed once.

The worker runs as a real subprocess (``python -m workers.main``) against the answer-key
simulator; the target model answers in 0.4 s, so batches are in flight when the worker is
killed (after some cases were stored, before the run finished). A second worker takes over once
the batch activity's heartbeat times out: cases with a result row are returned as stored, calls
recorded in ``model_calls`` are not paid again, and the run completes with exactly one result
row and one billed call per case.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.config import Settings
from evals.targets import EvalRunResult
from tests.e2e.test_pipeline_crash import ROOT, wait_for, worker_env
from tests.workflows.eval_support import (
    SLOW,
    counts,
    eval_settings,
    eval_sim_port,
    new_wid,
    run_input,
    seed_dataset,
)
from workflows.eval_run import EvalRunWorkflow

pytestmark = pytest.mark.slow
__all__ = ["eval_settings", "eval_sim_port"]


def start_worker(settings: Settings, sim_port: int, task_queue: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **worker_env(settings, task_queue),
        "NEXUS_PROVIDERS__SIMULATOR_URL": f"http://127.0.0.1:{sim_port}",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.main"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def test_kill_worker_mid_run_each_case_evaluated_and_billed_once(
    temporal_client: Client,
    settings: Settings,
    eval_sim_port: int,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
    tmp_path: Path,
) -> None:
    await seed_dataset(sessions, tenant)
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    wid = new_wid(tenant)
    log = tmp_path / "worker.log"
    inp = run_input(tenant, SLOW, batch_size=10, batch_concurrency=1, case_concurrency=2)
    first = start_worker(settings, eval_sim_port, queue, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = await temporal_client.start_workflow(
            EvalRunWorkflow.run, inp, id=wid, task_queue=queue, result_type=EvalRunResult
        )

        async def some_cases_stored() -> bool:
            rows, _, _ = await counts(sessions, tenant, wid)
            return rows >= 5

        await wait_for(some_cases_stored, 90, f"the first case results (worker log: {log})")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        before, _, billed_before = await counts(sessions, tenant, wid)
        assert before < 40, "the run finished before the worker was killed"
        second = start_worker(settings, eval_sim_port, queue, log)
        result = await asyncio.wait_for(handle.result(), 180)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
    assert result.status == "completed"
    assert result.evaluated == 40
    rows, distinct, billed = await counts(sessions, tenant, wid)
    assert (rows, distinct) == (40, 40)  # each case evaluated once
    assert billed == 40  # each target call billed once (no judge metrics in this suite)
    assert billed_before >= before
    assert result.aggregates["metrics"]["normalized_match"]["mean"] == 1.0
