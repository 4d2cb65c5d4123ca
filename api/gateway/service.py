"""The gateway's call path: scopes, admission (limits + budget), cache, fallbacks, settlement, logs.

One model call, no workflow. For each request:

1. resolve the requested name (a model id or a route group) to candidate models the key may
   use and that can serve the request;
2. admit it in one Redis round trip: request and token rates per key and tenant, and a budget
   reservation of the most expensive candidate's estimate (so fallbacks cannot overspend);
3. serve from the opt-in cache, or call candidates in order, moving on only on retryable
   errors (and, for streams, only while nothing has been sent to the client);
4. settle actual usage (queued, settled in batches off the hot path), write the inference log
   (batched, off the hot path) and metrics.

The gateway has its own Redis client without redis-py's per-command socket timeout (that
timeout wraps every command write in a new task, ≈ 30% of a command's client CPU); its calls
on the request path are bounded with ``asyncio.timeout`` instead (:data:`REDIS_TIMEOUT_S`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis

from api.auth import LocalKeyCache
from core.errors import BadRequest, Forbidden, NotFound
from core.gateway import cache
from core.gateway.budgets import LimitLoader
from core.gateway.leases import LeaseBook
from core.gateway.limits import Admission, AdmissionRequest, admit
from core.gateway.logs import InferenceLogWriter, InferenceRecord
from core.gateway.metrics import record_metrics
from core.gateway.settlement import Settler
from core.identity import Principal
from core.providers.catalog import Catalog, ModelEntry
from core.providers.cost import cost_usd, estimate_chat_cost, estimate_embedding_cost
from core.providers.errors import ErrorKind, ProviderError
from core.providers.registry import ProviderRegistry, missing_capabilities
from core.providers.transport import Upstream
from core.providers.types import (
    ChatRequest,
    ChatResponse,
    DoneEvent,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorEvent,
    StreamEvent,
    TextDelta,
    Usage,
    UsageEvent,
)

log = logging.getLogger("nexus.gateway")
REDIS_TIMEOUT_S = 5.0  # what redis-py's default socket timeout would allow one command
FALLBACKS = Counter(
    "nexus_gateway_fallbacks_total",
    "Candidate models that failed with a retryable error before another one was tried",
    ["model", "provider", "kind"],
)


@dataclass
class Gateway:
    """Resources of the gateway, built once in the API lifespan."""

    catalog: Catalog
    registry: ProviderRegistry
    http: Upstream
    redis: Redis
    logs: InferenceLogWriter
    settler: Settler
    limits: LimitLoader
    default_rpm: int
    default_completion_tokens: int = 1024
    keys: LocalKeyCache | None = None  # the API process's in-memory key records (api.auth)
    leases: LeaseBook | None = None  # admission leases for busy keys (core.gateway.leases)

    async def aclose(self) -> None:
        """Settle and log what is still queued, then close the clients (the lifespan's end)."""
        if self.keys is not None:
            await self.keys.aclose()
        if self.leases is not None:
            await self.leases.aclose()
        await self.settler.aclose()
        await self.logs.aclose()
        await self.http.aclose()
        await self.redis.aclose()


@dataclass
class CallContext:
    """What one gateway call knows about itself, for settlement and the inference log."""

    principal: Principal
    request_id: str
    requested: str
    candidates: list[ModelEntry]
    route_group: str | None
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    admission: Admission | None = None
    prompt_tokens: int = 0
    finished: bool = False  # settled and logged (finish_call runs once per call)


def candidates_for(gw: Gateway, principal: Principal, name: str, req: ChatRequest | None) -> CallContext:
    """The models to try for ``name``, filtered by the key's scopes and the request's needs."""
    is_route = not gw.catalog.has_model(name)
    scope = f"routes:{name}" if is_route else f"models:{name}"
    if not principal.allows_scope(scope):
        # Indistinguishable from a missing model: a key learns nothing about what it cannot use.
        raise NotFound(f"model {name!r} does not exist or is not available to this key")
    models = gw.catalog.resolve(name)
    if req is not None:
        capable = [m for m in models if not missing_capabilities(m, req)]
        if not capable:
            missing = ", ".join(c.value for c in missing_capabilities(models[0], req))
            raise BadRequest(f"model {name!r} does not support this request (needs: {missing})")
        models = capable
    return CallContext(
        principal=principal,
        request_id="",
        requested=name,
        candidates=models,
        route_group=name if is_route else None,
        stream=False,
    )


def logs_content(principal: Principal) -> bool:
    return principal.extra.get("log_content") == "True"


def _content(req: ChatRequest | None, answer: str, tool_calls: list[Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"answer": answer}
    if req is not None:
        out["messages"] = [m.model_dump(mode="json", exclude_none=True) for m in req.messages]
    if tool_calls:
        out["tool_calls"] = [c.model_dump(mode="json") for c in tool_calls]
    return out


def _tenant_limit(principal: Principal, name: str) -> int | None:
    raw = principal.extra.get(name)
    return int(raw) if raw else None


async def admit_call(gw: Gateway, ctx: CallContext, estimate_tokens: int, estimate_usd: Decimal) -> None:
    async with asyncio.timeout(REDIS_TIMEOUT_S):
        ctx.admission = await _admit(gw, ctx, estimate_tokens, estimate_usd)


async def _admit(gw: Gateway, ctx: CallContext, estimate_tokens: int, estimate_usd: Decimal) -> Admission:
    p = ctx.principal
    request = AdmissionRequest(
        tenant_id=p.tenant_id,
        key_id=str(p.key_id),
        request_id=ctx.request_id,
        estimated_tokens=estimate_tokens,
        estimated_usd=estimate_usd,
        key_rpm=p.rate_limit_per_minute or gw.default_rpm,
        tenant_rpm=_tenant_limit(p, "tenant_rpm"),
        key_tpm=_tenant_limit(p, "key_tpm"),
        tenant_tpm=_tenant_limit(p, "tenant_tpm"),
    )
    if gw.leases is not None:
        return await gw.leases.admit(request, limits=gw.limits)
    return await admit(gw.redis, request, limits=gw.limits)


def _chat_estimate(gw: Gateway, ctx: CallContext, req: ChatRequest) -> tuple[int, Decimal]:
    estimates = [estimate_chat_cost(req, m, gw.default_completion_tokens) for m in ctx.candidates]
    worst = max(estimates, key=lambda e: e.usd)
    ctx.prompt_tokens = worst.prompt_tokens
    return worst.prompt_tokens + worst.completion_tokens, worst.usd


def finish_call(
    gw: Gateway,
    ctx: CallContext,
    *,
    model: ModelEntry | None,
    usage: Usage,
    error: ProviderError | None = None,
    error_code: str | None = None,
    ttft_ms: float | None = None,
    cache_hit: bool = False,
    content: dict[str, Any] | None = None,
) -> Decimal:
    """Settle the admission and log the call (both off the response's critical path).

    ``content`` (prompt and answer) is stored only when the tenant enabled content logging.
    Runs once per call: a second call (a stream closed twice) changes nothing and returns 0.
    """
    if ctx.finished:
        return Decimal(0)
    ctx.finished = True
    cost = cost_usd(usage, model.prices) if model is not None and not cache_hit else Decimal(0)
    latency_ms = (time.perf_counter() - ctx.started) * 1000
    record = InferenceRecord(
        tenant_id=ctx.principal.tenant_id,
        request_id=ctx.request_id,
        model=model.id if model else ctx.requested,
        provider=model.provider if model else "",
        status="error" if (error or error_code) else "ok",
        key_id=ctx.principal.key_id,
        route_group=ctx.route_group,
        error_code=error.kind.value if error else error_code,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_usd=cost,
        latency_ms=round(latency_ms, 3),
        ttft_ms=round(ttft_ms, 3) if ttft_ms is not None else None,
        stream=ctx.stream,
        cache_hit=cache_hit,
        content=content if logs_content(ctx.principal) else None,
    )
    if ctx.admission is not None:
        # The month a call is budgeted in is the month it is logged in (rebuild_month relies on it).
        record.created_at = ctx.admission.admitted_at
        tokens = usage.input_tokens + usage.output_tokens
        if gw.leases is not None:
            gw.leases.finish(ctx.admission, tokens, cost)
        else:
            gw.settler.submit(ctx.admission, tokens, cost)
    gw.logs.enqueue(record)
    record_metrics(record)
    return cost


def _retryable(err: ProviderError) -> bool:
    return err.retryable or err.kind in (ErrorKind.rate_limit, ErrorKind.overloaded, ErrorKind.server)


async def chat(
    gw: Gateway, ctx: CallContext, req: ChatRequest, *, use_cache: bool, force_cache: bool
) -> tuple[ChatResponse, ModelEntry | None, bool]:
    """A non-streaming call with fallbacks. Returns the response, the model and a cache-hit flag."""
    tokens, usd = _chat_estimate(gw, ctx, req)
    await admit_call(gw, ctx, tokens, usd)
    key = None
    if cache.cacheable(req, enabled=use_cache, force=force_cache):
        key = cache.cache_key(ctx.principal.tenant_id, req.model_copy(update={"model": ctx.requested}))
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            hit = await cache.get_chat(gw.redis, key)
        if hit is not None:
            model = gw.catalog.get(hit.model) if hit.model in {m.id for m in gw.catalog.models} else None
            finish_call(gw, ctx, model=model, usage=Usage(), cache_hit=True)
            return hit, model, True
    last: ProviderError | None = None
    for model in ctx.candidates:
        try:
            resp = await gw.registry.chat(req.model_copy(update={"model": model.id}))
        except ProviderError as err:
            last = err
            if _retryable(err) and model is not ctx.candidates[-1]:
                attempt_failed(model, err)
                continue
            finish_call(gw, ctx, model=model, usage=Usage(), error=err)
            raise
        content = _content(req, resp.content, resp.tool_calls) if logs_content(ctx.principal) else None
        finish_call(gw, ctx, model=model, usage=resp.usage, ttft_ms=resp.ttft_ms, content=content)
        if key is not None:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                await cache.put(gw.redis, key, resp)
        return resp, model, False
    assert last is not None
    raise last


def attempt_failed(model: ModelEntry, err: ProviderError) -> None:
    """A candidate failed and the call moves on: counted, logged, but not billed nor settled.

    Each request settles and logs exactly once, with its final outcome.
    """
    FALLBACKS.labels(model.id, model.provider, err.kind.value).inc()
    log.info("fallback", extra={"model": model.id, "provider": model.provider, "kind": err.kind.value})


@dataclass
class OpenStream:
    """A stream whose first event has arrived (so it can no longer fall back)."""

    model: ModelEntry
    first: StreamEvent
    events: AsyncIterator[StreamEvent]


async def open_stream(gw: Gateway, ctx: CallContext, req: ChatRequest) -> OpenStream:
    """Start a stream with fallbacks: a candidate failing before its first event is skipped."""
    tokens, usd = _chat_estimate(gw, ctx, req)
    await admit_call(gw, ctx, tokens, usd)
    last: ProviderError | None = None
    for model in ctx.candidates:
        events = gw.registry.stream(req.model_copy(update={"model": model.id}))
        try:
            first = await anext(events)
        except StopAsyncIteration:
            last = ProviderError(ErrorKind.truncated_stream, "empty stream", provider=model.provider)
        except ProviderError as err:
            last = err
        else:
            if isinstance(first, ErrorEvent):
                last = ProviderError(
                    ErrorKind(first.kind) if first.kind in ErrorKind._value2member_map_ else ErrorKind.server,
                    first.message,
                    provider=model.provider,
                    retryable=first.retryable,
                )
            else:
                return OpenStream(model=model, first=first, events=events)
        await events.aclose()  # type: ignore[attr-defined]
        if _retryable(last) and model is not ctx.candidates[-1]:
            attempt_failed(model, last)
            continue
        finish_call(gw, ctx, model=model, usage=Usage(), error=last)
        raise last
    assert last is not None
    raise last


async def relay(
    gw: Gateway, ctx: CallContext, opened: OpenStream, req: ChatRequest | None = None
) -> AsyncGenerator[StreamEvent, None]:
    """Yield the opened stream's events, then settle and log, also when the client goes away."""
    usage: Usage | None = None
    ttft: float | None = None
    text_chars = 0
    keep_text = logs_content(ctx.principal)
    pieces: list[str] = []
    error: ProviderError | None = None
    error_code: str | None = None
    completed = False
    try:
        event: StreamEvent | None = opened.first
        while event is not None:
            if ttft is None and isinstance(event, TextDelta):
                ttft = (time.perf_counter() - ctx.started) * 1000
            if isinstance(event, TextDelta):
                text_chars += len(event.text)
                if keep_text:
                    pieces.append(event.text)
            elif isinstance(event, UsageEvent):
                usage = event.usage
            elif isinstance(event, DoneEvent):
                completed = True
            elif isinstance(event, ErrorEvent):
                error_code = event.kind
            yield event
            event = await anext(opened.events, None)
    except ProviderError as err:
        error = err
        raise
    except (asyncio.CancelledError, GeneratorExit):
        if not completed and error_code is None:
            error_code = "client_disconnected"
        raise
    finally:
        await opened.events.aclose()  # type: ignore[attr-defined]
        if usage is None:
            # The upstream never reported usage (cut stream, disconnect): bill what was seen.
            usage = Usage(input_tokens=ctx.prompt_tokens, output_tokens=-(-text_chars // 4))
        if not completed and error is None and error_code is None:
            error_code = ErrorKind.truncated_stream.value
        finish_call(
            gw, ctx, model=opened.model, usage=usage, error=error, error_code=error_code, ttft_ms=ttft
        )


async def abandon(gw: Gateway, ctx: CallContext, opened: OpenStream) -> None:
    """Settle and log a stream whose relay never ran (the client left before it started).

    Its upstream answered (the first event arrived), so the prompt is billed, as :func:`relay`
    bills a stream cut before its usage; the upstream stream is closed.
    """
    if ctx.finished:
        return
    try:
        await opened.events.aclose()  # type: ignore[attr-defined]
    finally:
        finish_call(
            gw,
            ctx,
            model=opened.model,
            usage=Usage(input_tokens=ctx.prompt_tokens),
            error_code="client_disconnected",
        )


async def embed(gw: Gateway, ctx: CallContext, req: EmbeddingRequest) -> tuple[EmbeddingResponse, ModelEntry]:
    """Embeddings from the first capable candidate (with fallbacks on retryable errors)."""
    models = [m for m in ctx.candidates if "embeddings" in {c.value for c in m.capabilities}]
    if not models:
        raise BadRequest(f"model {ctx.requested!r} is not an embedding model")
    ctx.candidates = models
    estimates = [estimate_embedding_cost(req, m) for m in models]
    worst = max(estimates, key=lambda e: e.usd)
    await admit_call(gw, ctx, worst.prompt_tokens, worst.usd)
    last: ProviderError | None = None
    for model in models:
        try:
            resp = await gw.registry.embed(req.model_copy(update={"model": model.id}))
        except ProviderError as err:
            last = err
            if _retryable(err) and model is not models[-1]:
                attempt_failed(model, err)
                continue
            finish_call(gw, ctx, model=model, usage=Usage(), error=err)
            raise
        finish_call(gw, ctx, model=model, usage=resp.usage)
        return resp, model
    assert last is not None
    raise last


def require_chat_scope(principal: Principal) -> None:
    """Gateway calls need a key that may call models (any role but auditor)."""
    if principal.role.value == "auditor":
        raise Forbidden("auditor keys cannot call models")
