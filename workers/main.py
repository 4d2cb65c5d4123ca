"""The worker process: clients, Temporal workers per task queue, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.approvals import ApprovalActivities
from activities.connectors import ConnectorActivities
from activities.evals import EvalActivities
from activities.llm import LlmActivities
from activities.orchestration import OrchestrationActivities
from activities.pipeline_steps import PipelineActivities
from activities.probe import ProbeActivities
from activities.rag import RagActivities
from activities.rag_reembed import ReembedActivities
from core.approvals.notify import notification_settings
from core.config import Settings, get_settings
from core.db.engine import make_engine, make_sessionmaker
from core.logging import configure_logging
from core.providers import Catalog, ProviderRegistry
from core.rag.settings import rag_settings
from core.telemetry import configure_tracing, shutdown_tracing
from core.temporal.client import connect
from workflows.approval import ApprovalWorkflow
from workflows.connector_sync import ConnectorSyncWorkflow
from workflows.eval_run import EvalRunWorkflow
from workflows.ingest import IngestDocumentWorkflow
from workflows.orchestrate import OrchestrationWorkflow
from workflows.pipeline import PipelineWorkflow
from workflows.probe import ProbeWorkflow
from workflows.reembed import ReembedKnowledgeBaseWorkflow

log = logging.getLogger("nexus.worker")

SHUTDOWN_GRACE = timedelta(seconds=20)


def build_worker(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    task_queue: str,
    registry: ProviderRegistry | None = None,
) -> Worker:
    """A worker on ``task_queue`` serving the Probe, Orchestration and Approval workflows and their bound
    activities. ``registry`` defaults to one over the settings' catalog with its own HTTP client
    (pass the process's shared one in production, see :func:`run_worker`)."""
    probe = ProbeActivities(sessions, redis, settings)
    if registry is None:
        registry = make_registry(settings, make_http_client(settings))
    llm = LlmActivities(registry, registry.catalog, sessions, redis)
    orchestration = OrchestrationActivities(llm)
    approvals = ApprovalActivities(sessions, redis, notification_settings(settings))
    pipelines = PipelineActivities(sessions, redis, settings, llm)
    rag = RagActivities(sessions, redis, registry, rag_settings(settings))
    reembed = ReembedActivities(sessions, registry)
    connector_acts = ConnectorActivities(sessions, redis, settings, pipelines, temporal=client)
    with contextlib.suppress(RuntimeError):  # blocking connector activities use the running loop
        connector_acts.bind_loop()
    evals = EvalActivities(sessions, redis, llm, settings)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[
            ProbeWorkflow,
            OrchestrationWorkflow,
            ApprovalWorkflow,
            PipelineWorkflow,
            IngestDocumentWorkflow,
            ReembedKnowledgeBaseWorkflow,
            ConnectorSyncWorkflow,
            EvalRunWorkflow,
        ],
        activities=[
            probe.probe_postgres,
            probe.probe_redis,
            probe.probe_http,
            probe.record_probe_samples,
            probe.publish_run_event,
            probe.finish_run,
            llm.call_llm,
            llm.embed_texts,
            orchestration.load_models,
            orchestration.plan_task,
            orchestration.prepare_subtask,
            orchestration.run_consensus,
            orchestration.record_progress,
            orchestration.open_layer,
            orchestration.synthesize,
            approvals.record_approval,
            approvals.escalate_approval,
            approvals.finish_approval,
            approvals.notify_approval,
            pipelines.pipeline_transform,
            pipelines.pipeline_branch,
            pipelines.pipeline_http,
            pipelines.pipeline_llm,
            pipelines.pipeline_rag,
            pipelines.pipeline_render,
            pipelines.pipeline_outputs,
            pipelines.pipeline_progress,
            pipelines.pipeline_load_version,
            rag.rag_parse,
            rag.rag_pii_hook,
            rag.rag_chunk,
            rag.rag_embed_batch,
            rag.rag_finalize,
            reembed.rag_reembed_batch,
            reembed.rag_reembed_switch,
            connector_acts.connector_sync_begin,
            connector_acts.connector_sync_page,
            connector_acts.connector_sync_page_blocking,
            connector_acts.connector_sync_finish,
            connector_acts.connector_sync_snapshot,
            connector_acts.connector_plan,
            connector_acts.connector_action,
            connector_acts.connector_action_blocking,
            evals.eval_prepare,
            evals.eval_evaluate_cases,
            evals.eval_case_inputs,
            evals.eval_score_outputs,
            evals.eval_aggregate,
            evals.eval_regression,
            evals.eval_alert,
            evals.eval_finish,
        ],
        # sync ``def`` activities (blocking connectors such as Salesforce) run on this pool
        activity_executor=ThreadPoolExecutor(max_workers=8, thread_name_prefix="connector"),
        graceful_shutdown_timeout=SHUTDOWN_GRACE,
    )


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    """The provider HTTP client of a worker process (no proxies from the environment)."""
    return httpx.AsyncClient(
        timeout=settings.providers.timeouts.httpx_timeout(),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        trust_env=False,
    )


def make_registry(settings: Settings, http: httpx.AsyncClient) -> ProviderRegistry:
    """The provider registry over the settings' catalog."""
    return ProviderRegistry(Catalog.load(settings.providers), settings.providers, http)


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
    tracer_provider = configure_tracing(settings, "worker")
    engine = make_engine(settings.database)
    redis = Redis.from_url(settings.redis.url, decode_responses=False)
    http = make_http_client(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        # the client's tracing interceptor also serves every worker built on it
        client = await connect(settings, tracer_provider=tracer_provider)
        sessions = make_sessionmaker(engine)
        registry = make_registry(settings, http)
        workers = [
            build_worker(client, settings, sessions, redis, queue, registry)
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
        await http.aclose()
        await redis.aclose()
        await engine.dispose()
        await shutdown_tracing(tracer_provider)
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
