"""The simulator's ASGI application, its routes, and :func:`serve` (uvicorn + httptools).

Routing is a dictionary lookup on the exact path (plus Gemini's ``models/{model}:{action}``
paths), so a request costs a few dictionary operations before its handler runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from core.simulator import anthropic_proto, gemini_proto, openai_proto
from core.simulator.asgi import Receive, Request, Scope, Send, read_request, send_body
from core.simulator.driver import send_error
from core.simulator.engine import ErrorKind, Simulator
from core.simulator.scenario import Scenario, load_scenario

log = logging.getLogger(__name__)

Handler = Callable[[Simulator, Request, Send], Awaitable[None]]
GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/")


async def _health(sim: Simulator, req: Request, send: Send) -> None:
    await send_body(send, 200, b'{"status":"ok","simulated":true}')


async def _stats(sim: Simulator, req: Request, send: Send) -> None:
    body = {"requests": dict(sim.requests), "injected": dict(sim.injected)}
    await send_body(send, 200, orjson.dumps(body))


async def _reset(sim: Simulator, req: Request, send: Send) -> None:
    sim.reset()
    await send_body(send, 200, b'{"reset":true}')


async def _models(sim: Simulator, req: Request, send: Send) -> None:
    """``GET /v1/models`` answers in Anthropic's shape when called like Anthropic's SDK does."""
    if "anthropic-version" in req.headers:
        await anthropic_proto.list_models(sim, req, send)
    else:
        await openai_proto.list_models(sim, req, send)


POST_ROUTES: dict[str, Handler] = {
    "/v1/chat/completions": openai_proto.chat_completions,
    "/chat/completions": openai_proto.chat_completions,
    "/v1/embeddings": openai_proto.embeddings,
    "/embeddings": openai_proto.embeddings,
    "/v1/messages": anthropic_proto.messages,
    "/v1/messages/count_tokens": anthropic_proto.count_tokens,
    "/_sim/reset": _reset,
}
GET_ROUTES: dict[str, Handler] = {
    "/v1/models": _models,
    "/models": _models,
    "/v1beta/models": gemini_proto.list_models,
    "/health": _health,
    "/_sim/stats": _stats,
}


class SimulatorApp:
    """The ASGI callable. ``sim`` exposes counters (``requests``, ``injected``) to tests."""

    def __init__(self, scenario: Scenario) -> None:
        self.sim = Simulator(scenario)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one ASGI connection."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        req = await read_request(scope, receive)
        path = req.path
        routes = POST_ROUTES if req.method == "POST" else GET_ROUTES if req.method == "GET" else None
        handler = routes.get(path) if routes is not None else None
        if handler is not None:
            await handler(self.sim, req, send)
            return
        for prefix in GEMINI_PREFIXES:
            if path.startswith(prefix):
                rest = path[len(prefix) :]
                model, colon, action = rest.rpartition(":")
                if colon and req.method == "POST":
                    await gemini_proto.model_action(self.sim, req, send, model, action)
                    return
                if not colon and req.method == "GET" and prefix == "/v1/models/":
                    await openai_proto.get_model(self.sim, req, send, rest)
                    return
        wire = gemini_proto.WIRE if path.startswith("/v1beta/") else openai_proto.WIRE
        await send_error(send, wire, ErrorKind.NOT_FOUND, f"Unknown route {req.method} {path} (simulator)")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(scenario: Scenario) -> SimulatorApp:
    """The simulator as an ASGI app for a validated scenario."""
    return SimulatorApp(scenario)


class _DropIntendedCuts(logging.Filter):
    """Cut connections are the point of the ``cut`` failures: don't log them as server errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def serve(host: str, port: int, scenario_path: str | Path | None) -> None:
    """Run the simulator with uvicorn (httptools, uvloop if present, no access log) until stopped."""
    import uvicorn

    scenario = load_scenario(scenario_path)
    logging.getLogger("uvicorn.error").addFilter(_DropIntendedCuts())
    log.info("provider simulator on http://%s:%d (scenario %s)", host, port, scenario_path or "built-in")
    uvicorn.run(
        create_app(scenario),
        host=host,
        port=port,
        http="httptools",
        loop="auto",
        access_log=False,
        lifespan="on",
        log_level="info",
    )


__all__ = ["SimulatorApp", "create_app", "serve"]
