"""A pipeline ``http`` step resolves its host once: the connection goes to what its check vetted.

The step's name answers the allowlisted 127.0.0.1 (the local receiver) on the first lookup and
a private address on every later one, so a second lookup at connect time would fail the step.
Only the system resolver is faked (``socket.getaddrinfo``, for that one name); the worker,
Temporal, Postgres and the receiver are real.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.config import Settings
from tests.workflows.pipeline_support import http_step, new_wid, pipeline_worker, receiver, run_input
from workflows.pipeline import PipelineWorkflow

NAME = "hook.rebind.example"


async def test_http_step_connects_to_the_address_its_check_vetted(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    task_queue: str,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != NAME:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "10.0.0.7"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    async with (
        receiver() as recv,
        pipeline_worker(temporal_client, settings, sessions, redis_client, task_queue),
    ):
        raw = {"name": "dns", "steps": [http_step("notify", f"http://{NAME}:{recv.port}/hook")]}
        result = await temporal_client.execute_workflow(
            PipelineWorkflow.run,
            run_input(tenant, raw),
            id=new_wid(tenant),
            task_queue=task_queue,
        )
    assert result.status == "completed"
    assert recv.paths() == ["/hook"]
    [call] = recv.calls
    assert call.headers["host"] == f"{NAME}:{recv.port}"
    assert lookups == [NAME]
