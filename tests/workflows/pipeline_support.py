"""Helpers of the pipeline tests: a local webhook receiver that counts calls, and worker wiring."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from core.config import Settings
from core.db.models import Run, RunEvent
from core.pipelines.contracts import PipelineInput
from core.pipelines.definition import PipelineDefinition
from core.pipelines.settings import PipelineSettings
from workers.main import build_worker

SECRET = "test-signing-secret"


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """A raw-asyncio HTTP server. ``fail_first[path] = n`` answers 500 to the first n calls of a
    path; ``reject`` paths always answer 400; ``delay_s[path]`` sleeps before answering. Effects
    are deduplicated by ``Idempotency-Key`` (``effects`` counts distinct keys per path)."""

    fail_first: dict[str, int] = field(default_factory=dict)
    reject: set[str] = field(default_factory=set)
    delay_s: dict[str, float] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    effects: dict[str, list[str]] = field(default_factory=dict)
    arrived: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self, ok_only: bool = False) -> list[str]:
        return [c.path for c in self.calls if not ok_only or c.status < 300]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            self.arrived.append(path)
            if path in self.delay_s:
                await asyncio.sleep(self.delay_s[path])
            status = 200
            if path in self.reject:
                status = 400
            elif self.fail_first.get(path, 0) > 0:
                self.fail_first[path] -= 1
                status = 500
            self.calls.append(Call(method, path, headers, body, status))
            if status == 200:
                key = headers.get("idempotency-key", "")
                seen = self.effects.setdefault(path, [])
                if key not in seen:
                    seen.append(key)
            payload = json.dumps({"ok": status == 200, "path": path}).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def receiver(**kwargs: Any) -> AsyncIterator[Receiver]:
    recv = Receiver(**kwargs)
    server = await asyncio.start_server(recv.handle, "127.0.0.1", 0)
    recv.port = server.sockets[0].getsockname()[1]
    try:
        yield recv
    finally:
        server.close()
        await server.wait_closed()


def pipeline_settings(settings: Settings) -> Settings:
    """The session settings with the receiver allowlisted and a signing secret named ``hook``."""
    section = PipelineSettings(allow_private_hosts=["127.0.0.1"], signing_secrets={"hook": SecretStr(SECRET)})
    return settings.model_copy(update={"pipelines": section})


@asynccontextmanager
async def pipeline_worker(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    task_queue: str,
) -> AsyncIterator[Worker]:
    async with build_worker(client, pipeline_settings(settings), sessions, redis, task_queue) as w:
        yield w


def definition(raw: dict[str, Any]) -> PipelineDefinition:
    return PipelineDefinition.model_validate(raw)


def run_input(tenant: str, raw: dict[str, Any], inputs: dict[str, Any] | None = None) -> PipelineInput:
    return PipelineInput(
        tenant_id=tenant, pipeline_id="test", version=1, definition=definition(raw), inputs=inputs or {}
    )


def new_wid(tenant: str) -> str:
    return f"pipeline:{tenant}:{uuid.uuid4().hex[:12]}"


async def run_rows(sessions: async_sessionmaker[AsyncSession], wid: str) -> tuple[Run | None, list[RunEvent]]:
    async with sessions() as s:
        run = (await s.execute(select(Run).where(Run.workflow_id == wid))).scalar_one_or_none()
        events = list(
            (
                await s.execute(select(RunEvent).where(RunEvent.workflow_id == wid).order_by(RunEvent.seq))
            ).scalars()
        )
    return run, events


def http_step(sid: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "type": "http",
        "url": url,
        "retry": {"initial_interval_s": 0.05, "max_attempts": 3},
        **extra,
    }
