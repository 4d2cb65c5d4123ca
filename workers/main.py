"""The worker process: clients, Temporal workers per task queue, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from datetime import timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.probe import ProbeActivities
from core.config import Settings, get_settings
from core.db.engine import make_engine, make_sessionmaker
from core.logging import configure_logging
from core.temporal.client import connect
from workflows.probe import ProbeWorkflow

log = logging.getLogger("nexus.worker")

SHUTDOWN_GRACE = timedelta(seconds=20)


def build_worker(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    task_queue: str,
) -> Worker:
    """A worker on ``task_queue`` serving the Probe workflow and its bound activities."""
    probe = ProbeActivities(sessions, redis, settings)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ProbeWorkflow],
        activities=[
            probe.probe_postgres,
            probe.probe_redis,
            probe.probe_http,
            probe.record_probe_samples,
            probe.publish_run_event,
            probe.finish_run,
        ],
        graceful_shutdown_timeout=SHUTDOWN_GRACE,
    )


def install_metrics_runtime(settings: Settings) -> None:
    """Expose SDK metrics for Prometheus on ``worker.metrics_host:ports.worker_metrics`` (0 disables)."""
    port = settings.ports.worker_metrics
    if port <= 0:
        return
    address = f"{settings.worker.metrics_host}:{port}"
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    Runtime.set_default(runtime, error_if_already_set=False)


async def run_worker(settings: Settings, queues: list[str] | None = None) -> None:
    """Serve ``queues`` (default: the settings' task queue) until SIGTERM/SIGINT, then drain."""
    install_metrics_runtime(settings)
    engine = make_engine(settings.database)
    redis = Redis.from_url(settings.redis.url, decode_responses=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        client = await connect(settings)
        sessions = make_sessionmaker(engine)
        workers = [
            build_worker(client, settings, sessions, redis, queue)
            for queue in (queues or [settings.temporal.task_queue])
        ]
        async with contextlib.AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker)
            log.info("worker started", extra={"task_queues": [w.task_queue for w in workers]})
            await stop.wait()
            log.info("worker draining")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await redis.aclose()
        await engine.dispose()
        log.info("worker stopped")


def main() -> None:
    """Entry point: run the worker with settings from the environment."""
    settings = get_settings()
    configure_logging(settings)
    code = 0
    try:
        asyncio.run(run_worker(settings))
    except Exception:
        log.exception("worker failed")
        code = 1
    # temporalio can crash at interpreter exit after the work is done (sdk-python#300).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
