"""OpenTelemetry: one trace from the HTTP request through the workflow to its activities.

Real parts only: the FastAPI app with its lifespan, the Temporal dev server, a worker on a fresh
task queue, Postgres and Valkey. Spans go to the SDK's in-memory exporter through private tracer
providers (one for the API, one for the worker, as in two processes), so the process-global
provider is never set by these tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest_asyncio
from asgi_lifespan import LifespanManager
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Replayer

from api.app import create_app
from api.middleware import RequestContextMiddleware, TracedRequestContextMiddleware
from core.config import OtelSettings, Settings
from core.telemetry import configure_tracing
from core.temporal.client import connect, data_converter, tracing_interceptors
from tests.conftest import auth
from workers.main import build_worker
from workflows.probe import ProbeWorkflow

MakeKey = Callable[..., Awaitable[str]]


@dataclass
class TracedStack:
    http: httpx.AsyncClient
    spans: InMemorySpanExporter


@pytest_asyncio.fixture(scope="module")
async def traced(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[TracedStack]:
    """The API and a worker with tracing enabled, on their own task queue, exporting in memory."""
    queue = f"test-otel-{uuid.uuid4().hex[:12]}"
    traced_settings = settings.model_copy(
        update={
            "otel": OtelSettings(enabled=True),
            "temporal": settings.temporal.model_copy(update={"task_queue": queue}),
        }
    )
    exporter = InMemorySpanExporter()
    api_provider = configure_tracing(traced_settings, "api", processor=SimpleSpanProcessor(exporter))
    worker_provider = configure_tracing(traced_settings, "worker", processor=SimpleSpanProcessor(exporter))
    assert api_provider is not None
    assert worker_provider is not None
    app = create_app(traced_settings, tracer_provider=api_provider)
    worker_client = await connect(traced_settings, tracer_provider=worker_provider)
    redis = Redis.from_url(settings.redis.url)
    try:
        async with (
            LifespanManager(app) as manager,
            build_worker(worker_client, traced_settings, sessions, redis, queue),
        ):
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
                yield TracedStack(http, exporter)
    finally:
        await redis.aclose()
        api_provider.shutdown()
        worker_provider.shutdown()


async def run_probe(stack: TracedStack, temporal_client: Client, key: str, **headers: str) -> str:
    resp = await stack.http.post("/v1/probes/runs", json={}, headers={**auth(key), **headers})
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["id"]
    await temporal_client.get_workflow_handle(run_id).result()
    return run_id


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_from_request_through_workflow_to_activities(
    traced: TracedStack, temporal_client: Client, make_key: MakeKey, tenant_id: str
) -> None:
    traced.spans.clear()
    key = await make_key(tenant_id)
    run_id = await run_probe(traced, temporal_client, key)

    request = one(list(traced.spans.get_finished_spans()), "POST /v1/probes/runs")
    trace_id = request.context.trace_id
    spans = [s for s in traced.spans.get_finished_spans() if s.context.trace_id == trace_id]
    names = {s.name for s in spans}

    assert request.kind == SpanKind.SERVER
    assert request.parent is None
    assert request.resource.attributes["service.name"] == "nexus-api"
    assert request.attributes is not None
    assert request.attributes["http.request.method"] == "POST"
    assert request.attributes["http.route"] == "/v1/probes/runs"
    assert request.attributes["http.response.status_code"] == 202
    assert request.attributes["nexus.request_id"]

    start = one(spans, "StartWorkflow:Probe")
    assert parent_of(start) == request.context.span_id
    assert start.resource.attributes["service.name"] == "nexus-api"
    assert start.attributes is not None
    assert start.attributes["temporalWorkflowID"] == run_id

    # temporalio's interceptor keeps workflow spans replay-safe: zero-duration siblings in the
    # workflow's context (the StartWorkflow span), each activity's run under its StartActivity.
    for name in ("RunWorkflow:Probe", "CompleteWorkflow:Probe"):
        in_workflow = one(spans, name)
        assert parent_of(in_workflow) == start.context.span_id
        assert in_workflow.resource.attributes["service.name"] == "nexus-worker"
    run_activities = [s for s in spans if s.name.startswith("RunActivity:")]
    assert {"RunActivity:probe_postgres", "RunActivity:probe_redis", "RunActivity:finish_run"} <= names
    by_id = {s.context.span_id: s for s in spans}
    for activity in run_activities:
        started = by_id[activity.parent.span_id if activity.parent else 0]
        assert started.name == "StartActivity:" + activity.name.removeprefix("RunActivity:")
        assert started.resource.attributes["service.name"] == "nexus-worker"
        assert parent_of(started) == start.context.span_id
        assert activity.kind == SpanKind.SERVER
        assert activity.resource.attributes["service.name"] == "nexus-worker"
        assert activity.attributes is not None
        assert activity.attributes["temporalWorkflowID"] == run_id
    # nothing of this run escaped into another trace
    strays = [
        s.name
        for s in traced.spans.get_finished_spans()
        if s.context.trace_id != trace_id
        and s.attributes
        and s.attributes.get("temporalWorkflowID") == run_id
    ]
    assert strays == []


async def test_traced_history_replays_without_new_spans(
    traced: TracedStack, temporal_client: Client, make_key: MakeKey, tenant_id: str, settings: Settings
) -> None:
    """The interceptor keeps workflows deterministic and emits nothing while replaying."""
    key = await make_key(tenant_id)
    run_id = await run_probe(traced, temporal_client, key)
    history = await temporal_client.get_workflow_handle(run_id).fetch_history()
    assert any(e.HasField("workflow_execution_started_event_attributes") for e in history.events)

    exporter = InMemorySpanExporter()
    provider = configure_tracing(
        settings.model_copy(update={"otel": OtelSettings(enabled=True)}),
        "worker",
        processor=SimpleSpanProcessor(exporter),
    )
    assert provider is not None
    replayer = Replayer(
        workflows=[ProbeWorkflow],
        data_converter=data_converter(settings.security),
        interceptors=tracing_interceptors(provider),
    )
    await replayer.replay_workflow(history)  # raises on non-determinism
    assert exporter.get_finished_spans() == ()


async def test_continues_the_callers_trace(
    traced: TracedStack, temporal_client: Client, make_key: MakeKey, tenant_id: str
) -> None:
    traced.spans.clear()
    key = await make_key(tenant_id)
    caller_trace = uuid.uuid4().hex
    await run_probe(traced, temporal_client, key, traceparent=f"00-{caller_trace}-{'ab' * 8}-01")

    request = one(list(traced.spans.get_finished_spans()), "POST /v1/probes/runs")
    assert f"{request.context.trace_id:032x}" == caller_trace
    assert request.parent is not None
    assert request.parent.is_remote
    assert one(list(traced.spans.get_finished_spans()), "RunWorkflow:Probe").context.trace_id == (
        request.context.trace_id
    )


async def test_spans_never_carry_keys_headers_bodies_or_query_strings(
    traced: TracedStack, temporal_client: Client, make_key: MakeKey, tenant_id: str
) -> None:
    traced.spans.clear()
    key = await make_key(tenant_id)
    secret = f"s3cret-{uuid.uuid4().hex}"
    run_id = await run_probe(traced, temporal_client, key, **{"X-Api-Key": secret})
    await traced.http.get(f"/v1/runs/{run_id}?api_key={secret}&token={key}", headers=auth(key))
    await traced.http.post("/v1/probes/runs", json={"note": secret, "key": key}, headers=auth(key))
    unauthorised = await traced.http.get("/v1/runs", headers=auth(key[:-4] + "abcd"))
    assert unauthorised.status_code == 401
    await traced.http.request(f"X{secret.upper()}", "/v1/runs", headers=auth(key))  # a made-up method
    chat = await traced.http.post(  # the gateway's fast path (served before FastAPI's router)
        f"/v1/chat/completions?key={key}", json={"model": secret, "messages": []}, headers=auth(secret)
    )
    assert chat.status_code == 401

    spans = traced.spans.get_finished_spans()
    assert len(spans) > 10
    assert {s.name for s in spans} >= {"GET /v1/runs", "POST /v1/chat/completions", "RunWorkflow:Probe"}
    assert any(
        s.name.startswith("HTTP") and (s.attributes or {}).get("http.request.method") == "_OTHER"
        for s in spans
    )
    token = key.split("_")[-1]
    for span in spans:
        texts = [span.name, str(span.status.description or "")]
        texts += [f"{k}={v!r}" for k, v in (span.attributes or {}).items()]
        texts += [f"{k}={v!r}" for k, v in span.resource.attributes.items()]
        for event in span.events:
            texts += [event.name, *(f"{k}={v!r}" for k, v in (event.attributes or {}).items())]
        for text in texts:
            for forbidden in (key, token, secret, "Bearer", "api_key=", "authorization"):
                assert forbidden.lower() not in text.lower(), (span.name, text)


async def test_disabled_tracing_installs_nothing(settings: Settings) -> None:
    assert not settings.otel.enabled
    exporter = InMemorySpanExporter()
    assert configure_tracing(settings, "api") is None
    assert configure_tracing(settings, "api", processor=SimpleSpanProcessor(exporter)) is None
    # the OpenTelemetry API stays on its no-op proxy: nothing in this process set a provider
    assert not isinstance(trace.get_tracer_provider(), SdkTracerProvider)
    assert not trace.get_current_span().is_recording()

    app = create_app(settings)
    middleware = [getattr(m.cls, "__name__", "") for m in app.user_middleware]
    assert RequestContextMiddleware.__name__ in middleware
    assert TracedRequestContextMiddleware.__name__ not in middleware
    client = await connect(settings)
    assert client.config()["interceptors"] == []
    assert exporter.get_finished_spans() == ()
