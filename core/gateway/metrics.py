"""Prometheus metrics of the gateway (module-level collectors on the default registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from core.gateway.logs import InferenceRecord

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "nexus_gateway_requests_total",
    "Gateway calls by model, provider and status",
    ["model", "provider", "status"],
)
TOKENS = Counter(
    "nexus_gateway_tokens_total",
    "Tokens by model, provider and kind (input, output, cached, reasoning)",
    ["model", "provider", "kind"],
)
COST = Counter("nexus_gateway_cost_usd_total", "Cost in USD by model and provider", ["model", "provider"])
LATENCY = Histogram(
    "nexus_gateway_latency_seconds",
    "Gateway call duration (whole answer) by model and provider",
    ["model", "provider"],
    buckets=_LATENCY_BUCKETS,
)
TTFT = Histogram(
    "nexus_gateway_ttft_seconds",
    "Time to first token of streamed calls by model and provider",
    ["model", "provider"],
    buckets=_LATENCY_BUCKETS,
)
CACHE_LOOKUPS = Counter("nexus_gateway_cache_total", "Response cache lookups and stores", ["result"])
LOGS_DROPPED = Counter(
    "nexus_inference_logs_dropped_total", "Inference log records dropped because the writer queue was full"
)
LOGS_FAILED = Counter(
    "nexus_inference_logs_failed_total", "Inference log records lost after every write retry failed"
)
LOGS_WRITTEN = Counter("nexus_inference_logs_written_total", "Inference log records written to Postgres")


def record_metrics(record: InferenceRecord) -> None:
    """Count one finished call: request, tokens, cost, latency and (if known) time to first token."""
    model, provider = record.model, record.provider
    REQUESTS.labels(model=model, provider=provider, status=record.status).inc()
    for kind, count in (
        ("input", record.input_tokens),
        ("output", record.output_tokens),
        ("cached", record.cached_tokens),
        ("reasoning", record.reasoning_tokens),
    ):
        if count:
            TOKENS.labels(model=model, provider=provider, kind=kind).inc(count)
    if record.cost_usd:
        COST.labels(model=model, provider=provider).inc(float(record.cost_usd))
    LATENCY.labels(model=model, provider=provider).observe(record.latency_ms / 1000)
    if record.ttft_ms is not None:
        TTFT.labels(model=model, provider=provider).observe(record.ttft_ms / 1000)
