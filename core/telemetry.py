"""OpenTelemetry tracing: an SDK tracer provider per process, only when ``NEXUS_OTEL__ENABLED``.

Disabled (the default), nothing is installed: the OpenTelemetry API keeps its no-op tracer, the
API middleware is not wrapped and Temporal gets no tracing interceptor, so requests, workflow
tasks and activities pay nothing. The SDK and the exporter are imported only when enabled.

The provider is handed explicitly to the API middleware and to the Temporal client (whose
``TracingInterceptor`` also serves the workers built on it), so a trace runs
HTTP request → StartWorkflow → RunWorkflow → StartActivity → RunActivity without relying on
process globals. It is also set as the global provider, which OpenTelemetry allows once per
process, for libraries that trace through the global API. Tests pass their own span processor
and get a private provider that never touches the global.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from opentelemetry import trace

from core.config import OtelSettings, Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

log = logging.getLogger("nexus.telemetry")

TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector base URL (a full ``…/v1/traces`` URL is kept)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def configure_tracing(
    settings: Settings, service: str, *, processor: SpanProcessor | None = None
) -> TracerProvider | None:
    """The tracer provider of this process for ``service`` (``api``, ``worker``), or ``None``.

    ``None`` when tracing is disabled, or enabled without an endpoint and without ``processor``
    (a warning says so): callers then install nothing. Without ``processor`` the provider
    exports in batches over OTLP/HTTP and becomes the global one; calling again returns that
    same provider (idempotent: one exporter per process). With ``processor`` (tests, custom
    exporters) a new private provider is built around it and the global is left alone.
    Shut it down with :func:`shutdown_tracing` when the process stops.
    """
    otel = settings.otel
    if not otel.enabled:
        return None
    from opentelemetry.sdk.trace import TracerProvider

    if processor is not None:
        return _provider(otel, service, processor)
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    if not otel.endpoint:
        log.warning("tracing enabled without NEXUS_OTEL__ENDPOINT: no spans are exported")
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = _provider(
        otel, service, BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(otel.endpoint)))
    )
    trace.set_tracer_provider(provider)
    log.info(
        "tracing enabled",
        extra={"service": provider.resource.attributes.get("service.name"), "endpoint": otel.endpoint},
    )
    return provider


def _provider(otel: OtelSettings, service: str, processor: SpanProcessor) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"{otel.service_name}-{service}", "service.namespace": otel.service_name}
        ),
        # A caller's sampling decision (traceparent, the API's span) wins; the ratio applies to roots.
        sampler=ParentBased(TraceIdRatioBased(otel.sample_ratio)),
    )
    provider.add_span_processor(processor)
    return provider


async def shutdown_tracing(provider: TracerProvider | None) -> None:
    """Export the spans still queued and stop the exporter (off the event loop: it blocks)."""
    if provider is not None:
        await asyncio.to_thread(provider.shutdown)
