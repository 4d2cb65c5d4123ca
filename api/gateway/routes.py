"""OpenAI-compatible gateway routes: chat completions (incl. streaming), embeddings, models.

Errors keep the API's problem+json shape and also carry OpenAI's ``error`` envelope, so the
official SDKs raise their usual classes (401 ``AuthenticationError``, 404 ``NotFoundError``,
429 ``RateLimitError`` …) with a readable message.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse

from api.deps import AppState, StateDep
from api.gateway import openai_wire as wire
from api.gateway import service
from api.gateway.service import Gateway
from core.errors import NexusError, Unavailable
from core.identity import Principal
from core.providers.errors import ProviderError
from core.providers.types import (
    ChatRequest,
    DoneEvent,
    ErrorEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UsageEvent,
)

router = APIRouter(tags=["gateway"])


class CallStream(StreamingResponse):
    """An SSE answer that settles and logs its call however the response ends.

    A stream's relay (:func:`service.relay`) settles the call when it ends, is cut, or is closed.
    But when the client goes away while the first frame is being sent, Starlette stops the
    response without ever resuming the body generator, so the relay would neither run nor
    settle: no inference log, and the budget held until its reservation expires. Closing the body
    here settles a started relay; :func:`service.abandon` settles one that never started.
    """

    def __init__(
        self,
        content: AsyncIterator[bytes],
        gw: Gateway,
        ctx: service.CallContext,
        opened: service.OpenStream,
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._call = (gw, ctx, opened)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            gw, ctx, opened = self._call
            try:
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            finally:
                await service.abandon(gw, ctx, opened)


FINGERPRINT = "nexus-gateway"


async def gateway_principal(request: Request, state: StateDep) -> Principal:
    """Authenticate without the generic request-rate check: admission counts requests itself."""
    from api.auth import authenticate

    return await authenticate(request, state, rate_limit=False)


GatewayPrincipal = Annotated[Principal, Depends(gateway_principal)]


async def get_gateway(state: StateDep) -> Gateway:
    if state.gateway is None:
        raise Unavailable("the gateway is not configured")
    return state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def request_id_of(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return str(rid) if rid else uuid.uuid4().hex


def cache_flags(header: str | None) -> tuple[bool, bool]:
    """``X-Nexus-Cache: use`` (deterministic requests only) or ``force``; absent = no cache."""
    value = (header or "").strip().lower()
    return value in ("use", "force", "true", "1"), value == "force"


def gateway_headers(
    model_id: str, provider: str, simulated: bool, cache_hit: bool | None = None
) -> dict[str, str]:
    headers = {"x-nexus-model": model_id, "x-nexus-provider": provider}
    if simulated:
        headers["x-nexus-simulated"] = "true"
    if cache_hit is not None:
        headers["x-nexus-cache"] = "hit" if cache_hit else "miss"
    return headers


class UpstreamError(NexusError):
    """A provider failure, rendered as problem+json (with OpenAI's envelope) by the API."""

    title = "Upstream provider error"

    def __init__(self, err: ProviderError) -> None:
        extra: dict[str, Any] = {"provider": err.provider} if err.provider else {}
        if err.retry_after_s:
            extra["retry_after_s"] = max(1, int(err.retry_after_s + 0.999))
        super().__init__(str(err), **extra)
        self.status = err.gateway_status  # type: ignore[misc]
        self.code = f"upstream_{err.kind.value}"  # type: ignore[misc]


def provider_problem(err: ProviderError) -> NexusError:
    return UpstreamError(err)


@router.post("/chat/completions", summary="OpenAI-compatible chat completion (streaming with stream=true)")
async def chat_completions(
    body: wire.ChatCompletionRequest,
    request: Request,
    principal: GatewayPrincipal,
    gw: GatewayDep,
    x_nexus_cache: Annotated[str | None, Header()] = None,
) -> Response:
    # The API serves this path through api.gateway.fast (same function, without FastAPI's
    # per-request machinery); this route documents it and serves it when mounted elsewhere.
    return await serve_chat(gw, principal, body, request_id_of(request), x_nexus_cache)


async def serve_chat(
    gw: Gateway,
    principal: Principal,
    body: wire.ChatCompletionRequest,
    request_id: str,
    x_nexus_cache: str | None,
) -> Response:
    """One chat completion for an authenticated caller: the answer, or an SSE stream."""
    service.require_chat_scope(principal)
    normalised = wire.to_chat_request(body, body.model)
    ctx = service.candidates_for(gw, principal, body.model, normalised)
    ctx.request_id = request_id
    use_cache, force_cache = cache_flags(x_nexus_cache)
    try:
        if not body.stream:
            resp, model, hit = await service.chat(
                gw, ctx, normalised, use_cache=use_cache, force_cache=force_cache
            )
            served = model.id if model else resp.model
            return Response(
                wire.completion_json(resp, served, ctx.request_id, FINGERPRINT),
                media_type="application/json",
                headers=gateway_headers(
                    served, resp.provider, bool(model and model.simulated), hit if use_cache else None
                ),
            )
        ctx.stream = True
        opened = await service.open_stream(gw, ctx, normalised)
    except ProviderError as err:
        raise provider_problem(err) from None
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    writer = wire.ChunkWriter(ctx.request_id, opened.model.id, FINGERPRINT)
    return CallStream(
        _sse(gw, ctx, opened, writer, include_usage, normalised),
        gw,
        ctx,
        opened,
        headers={
            **gateway_headers(opened.model.id, opened.model.provider, opened.model.simulated),
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
        },
    )


async def _sse(
    gw: Gateway,
    ctx: service.CallContext,
    opened: service.OpenStream,
    writer: wire.ChunkWriter,
    include_usage: bool,
    req: ChatRequest,
) -> AsyncIterator[bytes]:
    yield writer.role()
    usage_frame: bytes | None = None
    try:
        async with contextlib.aclosing(service.relay(gw, ctx, opened, req)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    yield writer.text(event.text)
                elif isinstance(event, ReasoningDelta):
                    yield writer.reasoning(event.text)
                elif isinstance(event, ToolCallDelta):
                    yield writer.tool_call(event.index, event.id, event.name, event.arguments)
                elif isinstance(event, UsageEvent):
                    if include_usage:
                        usage_frame = writer.usage(event.usage)
                elif isinstance(event, DoneEvent):
                    yield writer.finish(event.stop_reason)
                elif isinstance(event, ErrorEvent):
                    # Never a silent 200 with half an answer: the stream ends with an error event.
                    message = f"upstream {event.kind}: {event.message}"
                    yield wire.stream_error_frame(message, "upstream_error", f"upstream_{event.kind}")
                    return
    except ProviderError as err:
        message = f"upstream {err.kind.value}: {err}"
        yield wire.stream_error_frame(message, "upstream_error", f"upstream_{err.kind.value}")
        return
    if usage_frame is not None:
        yield usage_frame
    yield wire.DONE


@router.post("/embeddings", summary="OpenAI-compatible embeddings")
async def embeddings(
    body: wire.EmbeddingsRequest, request: Request, principal: GatewayPrincipal, gw: GatewayDep
) -> Response:
    service.require_chat_scope(principal)
    ctx = service.candidates_for(gw, principal, body.model, None)
    ctx.request_id = request_id_of(request)
    try:
        resp, model = await service.embed(gw, ctx, wire.to_embedding_request(body, body.model))
    except ProviderError as err:
        raise provider_problem(err) from None
    return Response(
        wire.embeddings_json(resp, model.id, body.encoding_format),
        media_type="application/json",
        headers=gateway_headers(model.id, model.provider, model.simulated),
    )


def _model_json(model: Any, created: int) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": created,
        "owned_by": model.provider,
        "capabilities": sorted(c.value for c in model.capabilities),
        "context_window": model.context_window,
        "pricing": {
            "input_per_mtok": str(model.prices.input),
            "output_per_mtok": str(model.prices.output),
            "cached_per_mtok": str(model.prices.cached) if model.prices.cached is not None else None,
        },
        "regions": list(model.regions),
        "simulated": model.simulated,
    }


@router.get("/models", summary="Models (and route groups) this key may use — OpenAI-compatible list")
async def list_models(principal: GatewayPrincipal, gw: GatewayDep) -> Response:
    created = int(time.time())
    data = [_model_json(m, created) for m in gw.catalog.visible_to(principal.scopes)]
    for group in gw.catalog.routes_visible_to(principal.scopes):
        data.append({"id": group.id, "object": "model", "created": created, "owned_by": "nexus-route"})
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


@router.get("/models/{model_id:path}", summary="One model — OpenAI-compatible")
async def get_model(model_id: str, principal: GatewayPrincipal, gw: GatewayDep) -> Response:
    visible = {m.id: m for m in gw.catalog.visible_to(principal.scopes)}
    if model_id not in visible:
        from core.errors import NotFound

        raise NotFound(f"model {model_id!r} does not exist or is not available to this key")
    return Response(
        orjson.dumps(_model_json(visible[model_id], int(time.time()))), media_type="application/json"
    )


def build_gateway(state: AppState) -> Gateway:
    """The gateway's resources for an API process (called from the lifespan)."""
    from redis.asyncio import Redis

    from api.auth import LocalKeyCache
    from core.gateway.budget_store import postgres_limits
    from core.gateway.leases import LeaseBook
    from core.gateway.logs import InferenceLogWriter
    from core.gateway.settlement import Settler
    from core.providers.catalog import Catalog
    from core.providers.registry import ProviderRegistry
    from core.providers.transport import AiohttpUpstream

    settings = state.settings
    catalog = Catalog.load(settings.providers)
    http = AiohttpUpstream()
    # No per-command socket timeout: the hot path bounds its Redis calls itself (service.py).
    redis = Redis.from_url(settings.redis.url, decode_responses=False, socket_timeout=None)
    writer = InferenceLogWriter(state.sessions, state.redis)
    writer.start()
    settler = Settler(redis)
    settler.start()
    keys = LocalKeyCache(settings.redis.url, ttl_s=settings.redis.key_cache_ttl_s)
    keys.start()
    leases = None
    if settings.api.admission_lease_max >= 2:
        leases = LeaseBook(redis, settler, max_requests=settings.api.admission_lease_max)
        leases.start()
    return Gateway(
        keys=keys,
        leases=leases,
        catalog=catalog,
        registry=ProviderRegistry(catalog, settings.providers, http),
        http=http,
        redis=redis,
        logs=writer,
        settler=settler,
        limits=postgres_limits(state.sessions),
        default_rpm=settings.api.rate_limit_per_minute,
        default_completion_tokens=settings.providers.default_completion_tokens,
    )
