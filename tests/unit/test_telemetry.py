"""core.telemetry: nothing installed when disabled, private providers for tests, OTLP export for real.

The exporting path sets OpenTelemetry's process-global provider (allowed once per process), so it
runs in a subprocess against a small OTLP/HTTP collector served by this test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.config import Settings
from core.telemetry import configure_tracing, traces_url

ROOT = Path(__file__).resolve().parents[2]


def make_settings(tmp_path: Path, **otel: object) -> Settings:
    return Settings(env="test", home=tmp_path, otel=otel)


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otel.example/v1/traces", "https://otel.example/v1/traces"),
    ],
)
def test_traces_url(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url


def test_disabled_returns_nothing_even_with_a_processor(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    settings = make_settings(tmp_path, endpoint="http://127.0.0.1:4318")
    assert configure_tracing(settings, "api") is None
    assert configure_tracing(settings, "api", processor=SimpleSpanProcessor(exporter)) is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_enabled_without_endpoint_installs_nothing(tmp_path: Path) -> None:
    assert configure_tracing(make_settings(tmp_path, enabled=True), "api") is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_processor_gives_a_private_provider(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    settings = make_settings(tmp_path, enabled=True, service_name="acme")
    provider = configure_tracing(settings, "api", processor=SimpleSpanProcessor(exporter))
    assert provider is not None
    assert trace.get_tracer_provider() is not provider
    with provider.get_tracer("t").start_as_current_span("work"):
        pass
    [span] = exporter.get_finished_spans()
    assert span.name == "work"
    assert span.resource.attributes["service.name"] == "acme-api"
    provider.shutdown()


def test_sample_ratio_zero_records_no_new_traces(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    settings = make_settings(tmp_path, enabled=True, sample_ratio=0.0)
    provider = configure_tracing(settings, "api", processor=SimpleSpanProcessor(exporter))
    assert provider is not None
    with provider.get_tracer("t").start_as_current_span("dropped") as span:
        assert not span.is_recording()
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A minimal OTLP/HTTP collector: records each POST's path and body, answers 200."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_api_exports_one_span_per_request_over_otlp_http(
    tmp_path: Path, collector: tuple[str, list[tuple[str, bytes]]]
) -> None:
    """The production path: global provider set once, batch export, flushed at lifespan end.

    FastAPI's own telemetry turns itself on once a global provider exists (and records query
    strings): only our span per request may be exported.
    """
    endpoint, received = collector
    script = textwrap.dedent(
        """
        import asyncio, sys
        import httpx
        from asgi_lifespan import LifespanManager
        from opentelemetry import trace
        from api.app import create_app
        from core.config import Settings
        from core.telemetry import configure_tracing

        settings = Settings(
            env="test", home=sys.argv[2], log_json=False, ports={"temporal": 9},
            otel={"enabled": True, "endpoint": sys.argv[1]},
        )
        provider = configure_tracing(settings, "api")
        assert provider is not None
        assert trace.get_tracer_provider() is provider
        assert configure_tracing(settings, "api") is provider  # idempotent

        async def main() -> None:
            app = create_app(settings)  # same provider, shut down (flushed) by the lifespan
            async with LifespanManager(app) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    secret = {"Authorization": "Bearer nx_live_topsecret"}
                    assert (await http.get("/healthz?api_key=topsecret", headers=secret)).status_code == 200
                    assert (await http.get("/v1/runs", headers=secret)).status_code == 401

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXUS_", "OTEL_", "FASTAPI_"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", script, endpoint, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert {path for path, _ in received} == {"/v1/traces"}
    spans = []
    for _, body in received:
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert attributes["service.name"] == "nexus-api"
            for scope in resource_spans.scope_spans:
                spans += [(scope.scope.name, span) for span in scope.spans]
    assert sorted((scope, span.name) for scope, span in spans) == [
        ("nexusai.api", "GET /healthz"),
        ("nexusai.api", "GET /v1/runs"),
    ]
    for body in (body for _, body in received):
        assert b"topsecret" not in body
        assert b"url.query" not in body
