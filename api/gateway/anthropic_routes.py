"""Anthropic-compatible gateway route: ``POST /v1/messages`` (streaming with ``stream: true``).

Any catalog model (OpenAI, Gemini, Anthropic, simulated…) answers Anthropic SDK clients through
the same call path as ``/v1/chat/completions``: scopes, admission, cache, fallbacks, settlement
and inference logs. Keys are accepted as ``x-api-key`` (what the Anthropic SDK sends) or as
``Authorization: Bearer``. Every error of this route, including authentication and validation
errors, is rendered in Anthropic's envelope so the SDK raises its usual classes with a readable
message.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import StateDep
from api.gateway import anthropic_wire as wire
from api.gateway import service
from api.gateway.routes import (
    CallStream,
    GatewayDep,
    cache_flags,
    gateway_headers,
    provider_problem,
    request_id_of,
)
from api.gateway.service import Gateway
from core.errors import NexusError
from core.identity import Principal
from core.providers.errors import ProviderError
from core.providers.types import (
    ChatRequest,
    DoneEvent,
    ErrorEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

log = logging.getLogger("nexus.gateway")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_json(status: int, message: str, request_id: str | None = None) -> dict[str, Any]:
    """Anthropic's error envelope (what the official SDKs parse) for an HTTP ``status``."""
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    if request_id:
        body["request_id"] = request_id
    return body


def _error_response(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    request_id = request_id_of(request)
    return JSONResponse(
        error_json(status, message, request_id),
        status_code=status,
        headers={**(headers or {}), "request-id": request_id},
    )


_UNION_TAGS = {"str", "list", "dict", "int", "float", "bool", "none"}


def _validation_message(exc: RequestValidationError) -> str:
    """Where and what, never the submitted value (it may be a secret or huge)."""
    parts: list[str] = []
    for err in exc.errors()[:5]:
        # Drop pydantic's union-member tags ("str", "list[tagged-union[…]]") from the path.
        path = [str(p) for p in err.get("loc", ())[1:] if str(p) not in _UNION_TAGS and "[" not in str(p)]
        line = f"{'.'.join(path) or 'body'}: {err.get('msg')}"
        if line not in parts:
            parts.append(line)
    return "; ".join(parts) or "the request body does not match the schema"


class AnthropicRoute(APIRoute):
    """Renders errors raised by this route, its dependencies and body validation as Anthropic's.

    The app-wide handlers answer problem+json; Anthropic clients expect
    ``{"type": "error", "error": {"type": …, "message": …}}`` instead.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def anthropic_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _error_response(request, 400, _validation_message(exc))
            except NexusError as exc:
                retry = exc.extra.get("retry_after_s")
                headers = {"retry-after": str(retry)} if retry is not None else None
                return _error_response(request, exc.status, exc.detail, headers)
            except StarletteHTTPException as exc:
                detail = exc.detail if isinstance(exc.detail, str) else "request failed"
                return _error_response(request, exc.status_code, detail)
            except Exception:
                log.exception("unhandled error", extra={"path": request.url.path})
                return _error_response(request, 500, "internal error")

        return anthropic_errors


router = APIRouter(tags=["gateway"], route_class=AnthropicRoute)


async def anthropic_principal(request: Request, state: StateDep) -> Principal:
    """Authenticate ``x-api-key`` (Anthropic SDKs) or ``Authorization: Bearer``, without rate check.

    ``api.auth.authenticate`` reads the Authorization header, so an ``x-api-key`` is presented
    to it as a bearer key on a copy of the request scope (the shared scope is left untouched).
    """
    from api.auth import authenticate

    api_key = request.headers.get("x-api-key", "").strip()
    if api_key and "authorization" not in request.headers:
        headers = [(k, v) for k, v in request.scope["headers"] if k != b"x-api-key"]
        headers.append((b"authorization", b"Bearer " + api_key.encode("latin-1")))
        request = Request({**request.scope, "headers": headers}, request.receive)
    return await authenticate(request, state, rate_limit=False)


AnthropicPrincipal = Annotated[Principal, Depends(anthropic_principal)]


@router.post("/messages", summary="Anthropic-compatible Messages API (streaming with stream=true)")
async def messages(
    body: wire.MessagesRequest,
    request: Request,
    principal: AnthropicPrincipal,
    gw: GatewayDep,
    x_nexus_cache: Annotated[str | None, Header()] = None,
) -> Response:
    service.require_chat_scope(principal)
    normalised = wire.to_chat_request(body, body.model)
    ctx = service.candidates_for(gw, principal, body.model, normalised)
    ctx.request_id = request_id_of(request)
    use_cache, force_cache = cache_flags(x_nexus_cache)
    try:
        if not body.stream:
            resp, model, hit = await service.chat(
                gw, ctx, normalised, use_cache=use_cache, force_cache=force_cache
            )
            served = model.id if model else resp.model
            return Response(
                wire.message_json(resp, served, ctx.request_id, thinking=body.wants_thinking),
                media_type="application/json",
                headers={
                    **gateway_headers(
                        served, resp.provider, bool(model and model.simulated), hit if use_cache else None
                    ),
                    "request-id": ctx.request_id,
                },
            )
        ctx.stream = True
        opened = await service.open_stream(gw, ctx, normalised)
    except ProviderError as err:
        raise provider_problem(err) from None
    writer = wire.EventWriter(ctx.request_id, opened.model.id, thinking=body.wants_thinking)
    return CallStream(
        _events(gw, ctx, opened, writer, normalised),
        gw,
        ctx,
        opened,
        headers={
            **gateway_headers(opened.model.id, opened.model.provider, opened.model.simulated),
            "request-id": ctx.request_id,
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
        },
    )


async def _events(
    gw: Gateway,
    ctx: service.CallContext,
    opened: service.OpenStream,
    writer: wire.EventWriter,
    req: ChatRequest,
) -> AsyncIterator[bytes]:
    yield writer.start(ctx.prompt_tokens)
    usage: Usage | None = None
    finished = False
    try:
        async with contextlib.aclosing(service.relay(gw, ctx, opened, req)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    yield writer.text(event.text)
                elif isinstance(event, ReasoningDelta):
                    frame = writer.reasoning(event.text)
                    if frame:
                        yield frame
                elif isinstance(event, ToolCallDelta):
                    yield writer.tool_call(event.index, event.id, event.name, event.arguments)
                elif isinstance(event, UsageEvent):
                    usage = event.usage
                elif isinstance(event, DoneEvent):
                    finished = True
                    yield writer.finish(event.stop_reason, usage)
                elif isinstance(event, ErrorEvent):
                    # Never a silent 200 with half an answer: the stream ends with an error event.
                    yield wire.stream_error(event.kind, f"upstream {event.kind}: {event.message}")
                    return
    except ProviderError as err:
        yield wire.stream_error(err.kind.value, f"upstream {err.kind.value}: {err}")
        return
    if not finished:
        yield wire.stream_error("truncated_stream", "upstream truncated_stream: the stream ended early")
