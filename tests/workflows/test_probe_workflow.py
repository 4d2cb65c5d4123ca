"""The Probe workflow against the real dev server, Postgres and Valkey."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.probe import ProbeActivities
from core.config import Settings
from core.contracts import HttpTarget, ProbeInput, ProbeResult, RecordSamplesInput, RecordSamplesResult
from core.db.models import ProbeSample, Run, RunEvent
from workflows.probe import ProbeWorkflow


@pytest_asyncio.fixture
async def http_target() -> AsyncIterator[HttpTarget]:
    """A minimal local HTTP server answering 204 to anything."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield HttpTarget(name="local-web", url=f"http://127.0.0.1:{port}/health")
    server.close()
    await server.wait_closed()


def _wid(tenant: str) -> str:
    return f"probe:{tenant}:{uuid.uuid4().hex[:12]}"


async def _rows(
    sessions: async_sessionmaker[AsyncSession], wid: str
) -> tuple[list[ProbeSample], list[RunEvent], Run | None]:
    async with sessions() as s:
        samples = list((await s.execute(select(ProbeSample).where(ProbeSample.workflow_id == wid))).scalars())
        events = list(
            (
                await s.execute(select(RunEvent).where(RunEvent.workflow_id == wid).order_by(RunEvent.seq))
            ).scalars()
        )
        run = (await s.execute(select(Run).where(Run.workflow_id == wid))).scalar_one_or_none()
    return samples, events, run


async def test_probe_records_samples_and_events(
    temporal_client: Client,
    worker: Worker,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
    http_target: HttpTarget,
) -> None:
    wid = _wid(tenant)
    result = await temporal_client.execute_workflow(
        ProbeWorkflow.run,
        ProbeInput(tenant_id=tenant, targets=[http_target]),
        id=wid,
        task_queue=task_queue,
        result_type=ProbeResult,
    )
    assert result.ok
    assert {s.target for s in result.samples} == {"postgres", "redis", "local-web"}
    web = next(s for s in result.samples if s.target == "local-web")
    assert web.status_code == 204

    samples, events, run = await _rows(sessions, wid)
    assert sorted(s.target for s in samples) == ["local-web", "postgres", "redis"]
    assert all(s.tenant_id == tenant for s in samples)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    types = [e.type for e in events]
    assert types[0] == "run.started"
    assert types[-1] == "run.completed"
    assert types.count("probe.sample") == 3
    assert run is not None
    assert run.status == "completed"
    assert run.closed_at is not None
    assert run.result is not None
    assert run.result["ok"] is True


async def test_unreachable_http_target_is_a_failed_sample_not_a_failed_run(
    temporal_client: Client, worker: Worker, task_queue: str, tenant: str
) -> None:
    from cli.embedded import free_port

    dead = HttpTarget(name="dead", url=f"http://127.0.0.1:{free_port()}/")
    result = await temporal_client.execute_workflow(
        ProbeWorkflow.run,
        ProbeInput(tenant_id=tenant, targets=[dead], check_postgres=False, check_redis=False, timeout_s=2),
        id=_wid(tenant),
        task_queue=task_queue,
        result_type=ProbeResult,
    )
    assert not result.ok
    assert result.samples[0].error == "ConnectError"


async def test_sample_write_retried_after_commit_is_stored_once(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    task_queue: str,
    tenant: str,
) -> None:
    """The first attempt commits and then 'crashes'; the retry must not duplicate samples."""
    real = ProbeActivities(sessions, redis_client, settings)

    @activity.defn(name="record_probe_samples")
    async def flaky_record(inp: RecordSamplesInput) -> RecordSamplesResult:
        result = await real.record_probe_samples(inp)
        if activity.info().attempt == 1:
            raise ApplicationError("worker lost after commit")
        return result

    worker = Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[ProbeWorkflow],
        activities=[
            real.probe_postgres,
            real.probe_redis,
            real.probe_http,
            flaky_record,
            real.publish_run_event,
            real.finish_run,
        ],
    )
    wid = _wid(tenant)
    async with worker:
        result = await temporal_client.execute_workflow(
            ProbeWorkflow.run,
            ProbeInput(tenant_id=tenant),
            id=wid,
            task_queue=task_queue,
            result_type=ProbeResult,
        )
    assert result.ok
    samples, events, run = await _rows(sessions, wid)
    assert sorted(s.target for s in samples) == ["postgres", "redis"]
    assert run is not None
    assert run.status == "completed"


async def test_failing_activity_fails_run_and_publishes_run_failed(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    task_queue: str,
    tenant: str,
) -> None:
    real = ProbeActivities(sessions, redis_client, settings)

    @activity.defn(name="probe_postgres")
    async def broken_postgres(_: object) -> None:
        raise ApplicationError("bad probe input", type="BadInput", non_retryable=True)

    worker = Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[ProbeWorkflow],
        activities=[
            broken_postgres,
            real.probe_redis,
            real.probe_http,
            real.record_probe_samples,
            real.publish_run_event,
            real.finish_run,
        ],
    )
    wid = _wid(tenant)
    async with worker:
        with pytest.raises(WorkflowFailureError) as info:
            await temporal_client.execute_workflow(
                ProbeWorkflow.run, ProbeInput(tenant_id=tenant), id=wid, task_queue=task_queue
            )
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "ProbeFailed"
    samples, events, run = await _rows(sessions, wid)
    assert samples == []
    assert [e.type for e in events] == ["run.started", "run.failed"]
    assert events[-1].data["error"] == "bad probe input"
    assert run is not None
    assert run.status == "failed"
    assert run.error == "bad probe input"


async def test_activity_refuses_another_workflows_id(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    tenant: str,
) -> None:
    """An activity writes only for its own workflow id (no cross-tenant writes via forged input)."""
    from temporalio.testing import ActivityEnvironment

    real = ProbeActivities(sessions, redis_client, settings)
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError, match="does not match"):
        await env.run(
            real.record_probe_samples,
            RecordSamplesInput(tenant_id=tenant, workflow_id=f"probe:{tenant}:x", samples=[]),
        )


async def test_run_worker_serves_metrics_and_drains_on_sigterm(
    settings: Settings, temporal_client: Client, task_queue: str, tenant: str
) -> None:
    """The worker process entry: metrics on its port, a probe served, SIGTERM stops it cleanly."""
    import os
    import signal

    import httpx

    from cli.embedded import free_port
    from workers.main import run_worker

    port = free_port()
    worker_settings = settings.model_copy(
        update={"ports": settings.ports.model_copy(update={"worker_metrics": port})}
    )
    task = asyncio.create_task(run_worker(worker_settings, [task_queue]))
    result = await temporal_client.execute_workflow(
        ProbeWorkflow.run,
        ProbeInput(tenant_id=tenant),
        id=_wid(tenant),
        task_queue=task_queue,
        result_type=ProbeResult,
    )
    assert result.ok
    async with httpx.AsyncClient(trust_env=False) as http:
        metrics = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert metrics.status_code == 200
    assert "temporal" in metrics.text
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 30)
