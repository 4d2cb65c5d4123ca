"""An approval survives a worker restart and a Temporal server restart (SQLite-backed dev server).

Uses its own dev server with ``--db-filename`` so the session server stays untouched; the
approval is started and decided through the REST API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cli.embedded import free_port, start_server, stop_process, temporal_spec
from core.config import Settings
from core.db.models import RunEvent
from core.temporal.client import connect
from tests.api.approvals_support import approvals_app
from tests.api.test_runs_api import wait_status
from tests.conftest import auth
from workers.main import build_worker

pytestmark = pytest.mark.slow


async def _wait_started(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> None:
    """The workflow recorded its row and published ``run.started``: it is now waiting."""
    for _ in range(200):
        async with sessions() as s:
            types = (
                await s.execute(select(RunEvent.type).where(RunEvent.workflow_id == workflow_id))
            ).scalars()
            if "run.started" in list(types):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("approval workflow never started waiting")


async def test_approval_survives_worker_and_server_restart(
    tmp_path: Path,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    make_key: Callable[..., Awaitable[str]],
    tenant_id: str,
) -> None:
    spec = temporal_spec(tmp_path / "temporal.db", free_port(), 0, tmp_path / "temporal.log")
    own = settings.model_copy(deep=True)
    own.temporal.address = f"127.0.0.1:{spec.port}"
    owner = await make_key(tenant_id)
    approver = await make_key(tenant_id, role="approver")
    redis = Redis.from_url(settings.redis.url)
    proc = start_server(spec)
    try:
        client = await connect(own)
        async with (
            build_worker(client, own, sessions, redis, own.temporal.task_queue),
            approvals_app(own) as (_, http),
        ):
            resp = await http.post(
                "/v1/approvals",
                json={"title": "Durable", "assignees": {"roles": ["approver"]}, "due_in_s": 86_400},
                headers=auth(owner),
            )
            assert resp.status_code == 202, resp.text
            item = resp.json()
            await _wait_started(sessions, item["workflow_id"])

        stop_process(proc)  # the worker is gone too: nothing runs the approval now
        proc = start_server(spec)

        client = await connect(own)
        async with (
            build_worker(client, own, sessions, redis, own.temporal.task_queue),
            approvals_app(own) as (_, http),
        ):
            pending = await http.get("/v1/approvals?status=pending", headers=auth(approver))
            assert item["id"] in {a["id"] for a in pending.json()["data"]}
            decided = await http.post(
                f"/v1/approvals/{item['id']}/decision",
                json={"decision": "approve", "comment": "after restart"},
                headers=auth(approver),
            )
            assert decided.status_code == 200, decided.text
            assert decided.json()["status"] == "approved"
            run = await wait_status(http, owner, item["workflow_id"], "completed")
            assert run["result"]["status"] == "approved"
            handle = client.get_workflow_handle(item["workflow_id"])
            history = await handle.fetch_history()
            assert history.events  # the original history was kept across the restart
    finally:
        stop_process(proc)
        await redis.aclose()
