"""The gateway's hot path as a plain ASGI layer in front of FastAPI's router.

``POST /v1/chat/completions`` is the one route whose per-request overhead is a product
requirement (docs/gateway.md, bench/gateway.py). FastAPI spends about a quarter of that
route's CPU in its generic machinery: matching the path against every included router,
solving the dependency graph, building the body model through its own validation layer, and
three more middleware layers. :class:`GatewayFastPath` serves that one method and path directly
and hands everything else to the app unchanged.

It does exactly what the FastAPI route does, with the same functions: the same key
authentication (``api.auth.authenticate``), strict validation of the same body model (unknown
fields are a 400, now parsed straight from the JSON bytes by pydantic-core), the same
``serve_chat``, and the same problem+json / OpenAI error envelope (``api.errors``). It runs
inside ``RequestContextMiddleware``, so request ids, the body-size limit, HTTP metrics and
access logs apply as before; anything it does not handle (an unexpected exception) propagates
to the app's outermost error handler, as it would from a route.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api import errors
from api.auth import authenticate
from api.deps import AppState
from api.gateway import openai_wire as wire
from api.gateway.routes import request_id_of, serve_chat
from core.errors import NexusError, Unavailable

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class _RouteLabel:
    """What the request middleware reads from ``scope["route"]`` for metric labels."""

    path: str


_CHAT_ROUTE = _RouteLabel(CHAT_PATH)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class GatewayFastPath:
    """ASGI middleware serving ``POST /v1/chat/completions``; see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT_PATH and scope["method"] == "POST":
            await self._chat(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = _CHAT_ROUTE
        request = Request(scope, receive)
        response: Response
        state: AppState = scope["app"].state.nexus
        try:
            principal = await authenticate(request, state, rate_limit=False)
            gw = state.gateway
            if gw is None:
                raise Unavailable("the gateway is not configured")
            raw = await request.body()
            try:
                body = wire.ChatCompletionRequest.model_validate_json(raw)
            except ValidationError as exc:
                found = exc.errors(include_url=False, include_input=False)
                response = errors.validation_problem(
                    request, [{**err, "loc": ("body", *err["loc"])} for err in found]
                )
            else:
                response = await serve_chat(
                    gw, principal, body, request_id_of(request), _header(scope, b"x-nexus-cache")
                )
        except NexusError as exc:
            response = errors.nexus_problem(request, exc)
        await response(scope, receive, send)
