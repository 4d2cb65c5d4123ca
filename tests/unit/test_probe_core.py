"""core.probe, core.events and core.runs against the real Postgres and Valkey."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import events, probe
from core.config import Settings
from core.contracts import HttpTarget, ProbeSample, RunStatus
from core.db.models import Tenant
from core.errors import BadRequest, NotFound
from core.runs import RunRepository, key_from_idempotency, status_from_temporal, workflow_id


@pytest_asyncio.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis.url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def tenant(sessions: async_sessionmaker[AsyncSession], tenant_id: str) -> str:
    async with sessions() as s, s.begin():
        await s.execute(insert(Tenant).values(id=tenant_id, name=tenant_id).on_conflict_do_nothing())
    return tenant_id


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://x/",
        "ftp://host/",
        "http://user:pw@host/",
        "http:///nohost",
        "javascript:1",
    ],
)
def test_http_target_rejects_unsafe_urls(url: str) -> None:
    with pytest.raises(ValidationError):
        HttpTarget(name="x", url=url)


def test_http_target_names() -> None:
    assert HttpTarget(name="openai", url="https://api.openai.com/v1/models").name == "openai"
    for bad in ("postgres", "Bad Name", ""):
        with pytest.raises(ValidationError):
            HttpTarget(name=bad, url="https://example.com/")


async def test_check_postgres_and_redis(sessions: async_sessionmaker[AsyncSession], redis: Redis) -> None:
    async with sessions() as s:
        pg = await probe.check_postgres(s)
    assert pg.ok
    assert pg.target == "postgres"
    assert pg.latency_ms >= 0
    rd = await probe.check_redis(redis)
    assert rd.ok
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    down = await probe.check_redis(dead, timeout_s=1)
    await dead.aclose()
    assert not down.ok
    assert down.error


async def test_check_http_statuses_and_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/boom":
            return httpx.Response(503)
        if request.url.path == "/slow":
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(401)  # reachable: an auth error still means the service is up

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        up = await probe.check_http(client, HttpTarget(name="a", url="http://svc/ok"))
        down = await probe.check_http(client, HttpTarget(name="b", url="http://svc/boom"))
        slow = await probe.check_http(client, HttpTarget(name="c", url="http://svc/slow?token=s3cret"))
    assert (up.ok, up.status_code) == (True, 401)
    assert (down.ok, down.error) == (False, "http_503")
    assert (slow.ok, slow.error) == (False, "timeout")
    assert "s3cret" not in slow.model_dump_json()


async def test_record_samples_is_idempotent(sessions: async_sessionmaker[AsyncSession], tenant: str) -> None:
    wid = workflow_id("probe", tenant, uuid.uuid4().hex)
    samples = [
        ProbeSample(target="postgres", ok=True, latency_ms=1.5),
        ProbeSample(target="redis", ok=False, latency_ms=2, error="timeout"),
    ]
    for expected in (2, 0):
        async with sessions() as s, s.begin():
            inserted = await probe.record_samples(
                s, tenant_id=tenant, workflow_id=wid, activity_id="3", samples=samples
            )
        assert inserted == expected
    async with sessions() as s:
        rows = await probe.recent_samples(s, tenant)
        other = await probe.recent_samples(s, "t-someone-else")
    assert sorted(r.target for r in rows) == ["postgres", "redis"]
    assert other == []


async def test_publish_is_idempotent_and_follow_replays_then_goes_live(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, tenant: str
) -> None:
    wid = workflow_id("probe", tenant, uuid.uuid4().hex)

    async def pub(type: str, seq: int | None = None) -> int:
        async with sessions() as s:
            return await events.publish(
                s, redis, tenant_id=tenant, workflow_id=wid, type=type, data={"n": seq}, seq=seq
            )

    assert await pub("run.started", 1) == 1
    assert await pub("run.started", 1) == 1  # an activity retry: same row
    assert await pub("probe.sample") == 2  # caller without a seq gets the next one

    received: list[events.Event] = []

    async def consume() -> None:
        async for event in events.follow(
            sessions, redis, tenant_id=tenant, workflow_id=wid, after_seq=1, idle_s=0.2
        ):
            received.append(event)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    await pub("probe.sample", 3)
    await pub("run.completed", 4)
    await asyncio.wait_for(task, 5)
    assert [(e.seq, e.type) for e in received] == [
        (2, "probe.sample"),
        (3, "probe.sample"),
        (4, "run.completed"),
    ]

    async with sessions() as s:
        assert [e.seq for e in await events.stored_events(s, tenant_id=tenant, workflow_id=wid)] == [
            1,
            2,
            3,
            4,
        ]
        assert await events.stored_events(s, tenant_id="t-other", workflow_id=wid) == []


async def test_follow_ends_when_run_closed_without_terminal_event(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, tenant: str
) -> None:
    wid = workflow_id("probe", tenant, uuid.uuid4().hex)

    async def closed() -> bool:
        return True

    got = [
        e async for e in events.follow(sessions, redis, tenant_id=tenant, workflow_id=wid, is_closed=closed)
    ]
    assert got == []


async def test_run_repository_tenancy_and_pagination(
    sessions: async_sessionmaker[AsyncSession], tenant: str
) -> None:
    async with sessions() as s, s.begin():
        repo = RunRepository.from_session(s)
        ids = []
        for i in range(3):
            run, created = await repo.create(
                tenant_id=tenant,
                workflow_id=workflow_id("probe", tenant, str(i)),
                kind="probe",
                created_by="t",
                idempotency_key=f"k{i}",
            )
            assert created
            ids.append(run.workflow_id)
        again, created = await repo.create(
            tenant_id=tenant,
            workflow_id=workflow_id("probe", tenant, "x"),
            kind="probe",
            created_by="t",
            idempotency_key="k0",
        )
        assert (again.workflow_id, created) == (ids[0], False)
        with pytest.raises(NotFound):
            await repo.get("t-other", ids[0])
        await repo.finish(
            tenant_id="t-other",
            workflow_id=ids[0],
            kind="probe",
            status=RunStatus.failed,
            result=None,
            error="x",
            cost_usd=Decimal(0),
        )
        assert (await repo.get(tenant, ids[0])).status == "running"
        page, cursor = await repo.list(tenant, limit=2)
        assert len(page) == 2
        assert cursor
        rest, end = await repo.list(tenant, limit=2, cursor=cursor)
        assert end is None
        assert {r.workflow_id for r in page + rest} == set(ids)
        with pytest.raises(BadRequest):
            await repo.list(tenant, cursor="garbage!")


def test_helpers() -> None:
    from temporalio.client import WorkflowExecutionStatus

    assert status_from_temporal(WorkflowExecutionStatus.CANCELED) is RunStatus.cancelled
    assert status_from_temporal(None) is RunStatus.running
    assert workflow_id("probe", "t1", "abc") == "probe:t1:abc"
    assert key_from_idempotency("a") == key_from_idempotency("a") != key_from_idempotency("b")
