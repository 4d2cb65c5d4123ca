"""Prometheus metrics of the gateway (module-level collectors on the default registry)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

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


@functools.lru_cache(maxsize=4096)
def _series(model: str, provider: str) -> tuple[Any, ...]:
    """The labelled children of one model (a label lookup takes a lock and a dict per call)."""
    return (
        REQUESTS.labels(model=model, provider=provider, status="ok"),
        REQUESTS.labels(model=model, provider=provider, status="error"),
        TOKENS.labels(model=model, provider=provider, kind="input"),
        TOKENS.labels(model=model, provider=provider, kind="output"),
        TOKENS.labels(model=model, provider=provider, kind="cached"),
        TOKENS.labels(model=model, provider=provider, kind="reasoning"),
        COST.labels(model=model, provider=provider),
        LATENCY.labels(model=model, provider=provider),
        TTFT.labels(model=model, provider=provider),
    )


def record_metrics(record: InferenceRecord) -> None:
    """Count one finished call: request, tokens, cost, latency and (if known) time to first token."""
    ok, error, tok_in, tok_out, tok_cached, tok_reasoning, cost, latency, ttft = _series(
        record.model, record.provider
    )
    (ok if record.status == "ok" else error).inc()
    for series, count in (
        (tok_in, record.input_tokens),
        (tok_out, record.output_tokens),
        (tok_cached, record.cached_tokens),
        (tok_reasoning, record.reasoning_tokens),
    ):
        if count:
            series.inc(count)
    if record.cost_usd:
        cost.inc(float(record.cost_usd))
    latency.observe(record.latency_ms / 1000)
    if record.ttft_ms is not None:
        ttft.observe(record.ttft_ms / 1000)
