"""The inference log writer and queries against real Postgres and Valkey."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.db.gateway_models import InferenceLog
from core.errors import BadRequest
from core.gateway import (
    InferenceLogWriter,
    InferenceRecord,
    LogFilters,
    content_logging,
    list_logs,
    record_metrics,
    tail,
)


@pytest_asyncio.fixture
async def redis(redis_port: int) -> AsyncIterator[Redis]:
    client = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    yield client
    await client.aclose()


@pytest.fixture
def inserts(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every INSERT INTO inference_logs the engine sends while the test runs."""
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO inference_logs"):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", listen)
    yield seen
    event.remove(engine.sync_engine, "before_cursor_execute", listen)


def record(tenant_id: str, request_id: str | None = None, **fields: Any) -> InferenceRecord:
    base: dict[str, Any] = {
        "tenant_id": tenant_id,
        "request_id": request_id or uuid.uuid4().hex,
        "model": "sim-openai/gpt-4o-mini",
        "provider": "sim",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": Decimal("0.00001234"),
        "latency_ms": 12.5,
    }
    return InferenceRecord(**(base | fields))


async def count(sessions: async_sessionmaker[AsyncSession], tenant_id: str) -> int:
    async with sessions() as session:
        total = await session.scalar(
            select(func.count()).select_from(InferenceLog).where(InferenceLog.tenant_id == tenant_id)
        )
    return int(total or 0)


async def test_records_are_written_in_few_batches_once_each(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, inserts: list[str]
) -> None:
    writer = InferenceLogWriter(sessions, batch_size=50, flush_interval_s=5.0)
    writer.start()
    ids = [f"{tenant_id}-{i}" for i in range(100)]
    for request_id in ids:
        writer.enqueue(record(tenant_id, request_id))
    for _ in range(500):  # written by the background task once the batch size is reached
        if writer.written >= 100:
            break
        await asyncio.sleep(0.01)
    assert writer.written == 100
    assert len(inserts) <= 3, inserts
    assert len(inserts) >= 2  # 100 records, batches of 50
    assert await count(sessions, tenant_id) == 100
    for request_id in ids[:30]:  # a retried log call: ignored, not duplicated
        writer.enqueue(record(tenant_id, request_id, model="other"))
    await writer.aclose()
    assert await count(sessions, tenant_id) == 100
    async with sessions() as session:
        models = set(
            (
                await session.execute(select(InferenceLog.model).where(InferenceLog.tenant_id == tenant_id))
            ).scalars()
        )
    assert models == {"sim-openai/gpt-4o-mini"}


async def test_close_drains_the_queue(sessions: async_sessionmaker[AsyncSession], tenant_id: str) -> None:
    writer = InferenceLogWriter(sessions, batch_size=1000, flush_interval_s=60.0)
    writer.start()
    for _ in range(10):
        writer.enqueue(record(tenant_id))
    await asyncio.sleep(0)
    assert await count(sessions, tenant_id) == 0
    await writer.aclose()
    assert await count(sessions, tenant_id) == 10
    writer.enqueue(record(tenant_id))  # after shutdown: dropped and counted, never blocks
    assert writer.dropped == 1


async def test_full_queue_drops_oldest_and_counts(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str
) -> None:
    before = REGISTRY.get_sample_value("nexus_inference_logs_dropped_total") or 0.0
    writer = InferenceLogWriter(sessions, max_queue=5)  # not started: nothing drains
    for i in range(8):
        writer.enqueue(record(tenant_id, f"{tenant_id}-{i}"))
    assert writer.dropped == 3
    assert writer.pending == 5
    assert REGISTRY.get_sample_value("nexus_inference_logs_dropped_total") == before + 3
    await writer.flush()
    async with sessions() as session:
        kept = set(
            (
                await session.execute(
                    select(InferenceLog.request_id).where(InferenceLog.tenant_id == tenant_id)
                )
            ).scalars()
        )
    assert kept == {f"{tenant_id}-{i}" for i in range(3, 8)}


class FlakySessions:
    """A session factory whose first ``failures`` sessions cannot connect."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], failures: int) -> None:
        self.sessions, self.failures = sessions, failures

    def __call__(self) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionRefusedError("database down")
        return self.sessions()


async def test_failed_flushes_are_retried_then_counted(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str
) -> None:
    flaky = InferenceLogWriter(FlakySessions(sessions, 2), backoff_s=0.01)  # type: ignore[arg-type]
    flaky.enqueue(record(tenant_id))
    await flaky.flush()
    assert flaky.written == 1
    assert await count(sessions, tenant_id) == 1
    down = InferenceLogWriter(FlakySessions(sessions, 99), max_attempts=3, backoff_s=0.01)  # type: ignore[arg-type]
    down.enqueue(record(tenant_id))
    await down.flush()
    assert down.failed == 1
    assert await count(sessions, tenant_id) == 1


async def test_content_is_stored_only_when_given(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str
) -> None:
    assert content_logging({"log_content": True})
    assert not content_logging({"log_content": "yes"})
    assert not content_logging(None)
    async with InferenceLogWriter(sessions) as writer:
        writer.enqueue(record(tenant_id, "with", content={"messages": [{"role": "user", "content": "hi"}]}))
        writer.enqueue(record(tenant_id, "without"))
    async with sessions() as session:
        rows = dict(
            (
                await session.execute(
                    select(InferenceLog.request_id, InferenceLog.content.is_(None)).where(
                        InferenceLog.tenant_id == tenant_id
                    )
                )
            ).all()
        )
        page = await list_logs(session, tenant_id, include_content=True)
    assert rows == {"with": False, "without": True}  # SQL NULL, not a JSON null
    by_id = {item["request_id"]: item for item in page.data}
    assert by_id["with"]["content"]["messages"][0]["content"] == "hi"
    async with sessions() as session:
        assert "content" not in (await list_logs(session, tenant_id)).data[0]


async def test_list_logs_isolates_tenants_filters_and_pages(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str
) -> None:
    other = tenant_id + "-b"
    key = uuid.uuid4()
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    async with InferenceLogWriter(sessions) as writer:
        for i in range(7):
            writer.enqueue(
                record(
                    tenant_id,
                    f"{tenant_id}-{i}",
                    created_at=start + dt.timedelta(seconds=i // 2),  # ties on created_at too
                    status="error" if i == 3 else "ok",
                    error_code="overloaded" if i == 3 else None,
                    key_id=key if i < 2 else None,
                    model="m-a" if i % 2 else "m-b",
                )
            )
        for i in range(3):
            writer.enqueue(record(other, f"{other}-{i}", created_at=start))
    seen: list[str] = []
    cursor = None
    async with sessions() as session:
        while True:
            page = await list_logs(session, tenant_id, limit=3, cursor=cursor)
            seen += [item["request_id"] for item in page.data]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [f"{tenant_id}-{i}" for i in reversed(range(7))]
        errors = await list_logs(session, tenant_id, LogFilters(status="error"))
        assert [e["error_code"] for e in errors.data] == ["overloaded"]
        assert len((await list_logs(session, tenant_id, LogFilters(key_id=key))).data) == 2
        assert len((await list_logs(session, tenant_id, LogFilters(model="m-a"))).data) == 3
        window = LogFilters(since=start + dt.timedelta(seconds=1), until=start + dt.timedelta(seconds=3))
        assert len((await list_logs(session, tenant_id, window)).data) == 4
        others = await list_logs(session, other, LogFilters(key_id=key))
        assert others.data == []
        assert {e["request_id"] for e in (await list_logs(session, other)).data} == {
            f"{other}-{i}" for i in range(3)
        }
        for bad in (["x"], ["2030-01-01T00:00:00", 1], "garbage", [1, 2, 3]):
            with pytest.raises(BadRequest):
                await list_logs(session, tenant_id, cursor=bad)


async def test_live_tail_sees_its_tenant_only_without_content(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, tenant_id: str
) -> None:
    stream = tail(redis, tenant_id, idle_s=0.2)
    received: list[dict[str, Any]] = []

    async def follow() -> None:
        async for item in stream:
            if item is not None:
                received.append(item)
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.3)  # subscribed (and one idle tick passed)
    async with InferenceLogWriter(sessions, redis) as writer:
        writer.enqueue(record(tenant_id + "-x", "someone-else"))
        writer.enqueue(record(tenant_id, "mine", content={"secret": "prompt"}))
    await asyncio.wait_for(follower, 5)
    await stream.aclose()
    assert [r["request_id"] for r in received] == ["mine"]
    assert "content" not in received[0]
    assert received[0]["cost_usd"] == "0.00001234"


def test_record_metrics_counts_each_family(tenant_id: str) -> None:
    model = f"model-{tenant_id}"
    labels = {"model": model, "provider": "sim"}
    record_metrics(record(tenant_id, model=model, ttft_ms=40.0, reasoning_tokens=2, cost_usd=Decimal("0.5")))
    record_metrics(record(tenant_id, model=model, status="error"))
    sample = REGISTRY.get_sample_value
    assert sample("nexus_gateway_requests_total", labels | {"status": "ok"}) == 1
    assert sample("nexus_gateway_requests_total", labels | {"status": "error"}) == 1
    assert sample("nexus_gateway_tokens_total", labels | {"kind": "input"}) == 20
    assert sample("nexus_gateway_tokens_total", labels | {"kind": "reasoning"}) == 2
    assert sample("nexus_gateway_cost_usd_total", labels) == pytest.approx(0.5 + 0.00001234)
    assert sample("nexus_gateway_latency_seconds_count", labels) == 2
    assert sample("nexus_gateway_ttft_seconds_count", labels) == 1
