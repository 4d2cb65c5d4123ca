"""Crash test: kill -9 the worker while an http step's call is in flight; the effect happens once.

The worker runs as a real subprocess (``python -m workers.main``) pointed at the session's
servers, with the local receiver allowlisted through ``NEXUS_PIPELINES__ALLOW_PRIVATE_HOSTS``.
The receiver takes 2 s to answer ``/slow``; the worker is killed after the request arrived and
before the answer, so the activity never records the call. A second worker retries the
activity (after its start-to-close timeout): it finds no record in ``pipeline_effects``, sends
the call again with the same ``Idempotency-Key``, and the receiver — which deduplicates on that
header — applies the effect once. The run then completes and exactly one effect is recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.config import Settings
from core.db.pipeline_models import PipelineEffect
from core.pipelines.contracts import PipelineResult
from tests.conftest import FIXTURES
from tests.workflows.pipeline_support import SECRET, http_step, receiver, run_input
from workflows.pipeline import PipelineWorkflow

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


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
        "NEXUS_PIPELINES__ALLOW_PRIVATE_HOSTS": json.dumps(["127.0.0.1"]),
        "NEXUS_PIPELINES__SIGNING_SECRETS": json.dumps({"hook": SECRET}),
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


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_kill_worker_mid_call_the_webhook_effect_happens_once(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
    tmp_path: Path,
) -> None:
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    wid = f"pipeline:{tenant}:crash-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    async with receiver(delay_s={"/slow": 2.0}) as recv:
        raw = {
            "name": "crash",
            "steps": [
                {"id": "prepare", "type": "transform", "expression": "'ready'"},
                http_step(
                    "notify",
                    recv.url + "/slow",
                    body={"state": "{{ steps.prepare.output }}"},
                    sign_with="hook",
                    timeout_s=4,
                    retry={"initial_interval_s": 0.1, "max_attempts": 5},
                ),
            ],
        }
        first = start_worker(settings, queue, log)
        second: subprocess.Popen[bytes] | None = None
        try:
            handle = await temporal_client.start_workflow(
                PipelineWorkflow.run,
                run_input(tenant, raw),
                id=wid,
                task_queue=queue,
                result_type=PipelineResult,
            )

            async def call_in_flight() -> bool:
                return recv.arrived.count("/slow") == 1

            await wait_for(call_in_flight, 60, f"the webhook call (worker log: {log})")
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            second = start_worker(settings, queue, log)
            result = await asyncio.wait_for(handle.result(), 90)
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)
    assert result.status == "completed"
    calls = [c for c in recv.calls if c.path == "/slow"]
    # The call went out twice (the first answer was lost with the worker) under one key ...
    assert len(calls) == 2
    assert {c.headers["idempotency-key"] for c in calls} == {f"{wid}:notify"}
    # ... and the receiver applied it once; our side recorded it once.
    assert recv.effects["/slow"] == [f"{wid}:notify"]
    async with sessions() as s:
        rows = list(
            (await s.execute(select(PipelineEffect).where(PipelineEffect.workflow_id == wid))).scalars()
        )
    assert [r.idempotency_key for r in rows] == [f"{wid}:notify"]
