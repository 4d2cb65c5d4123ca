"""ASGI middleware: request ids, body size limit (413), Prometheus metrics, access logs, tracing.

Written as plain ASGI callables (not BaseHTTPMiddleware) so streaming responses and SSE pass
through untouched and the hot path stays cheap.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from fastapi import FastAPI
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings

log = logging.getLogger("nexus.access")

REQUESTS = Counter("nexus_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "nexus_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _problem_bytes(status: int, code: str, title: str, detail: str, request_id: str) -> bytes:
    return json.dumps(
        {
            "type": f"https://nexusai.dev/problems/{code}",
            "title": title,
            "status": status,
            "code": code,
            "detail": detail,
            "request_id": request_id,
        }
    ).encode()


class _TooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Assigns ``X-Request-ID``, enforces the body limit, records metrics and an access log."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        # Copy: servers may hand every request the same lifespan state dict.
        scope["state"] = {**(scope.get("state") or {}), "request_id": request_id}
        start = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._reject(send_wrapper, request_id)
            self._record(scope, 413, start, request_id)
            return

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except _TooLarge:
            await self._reject(send_wrapper, request_id)
            status_holder["status"] = 413
        self._record(scope, status_holder["status"], start, request_id)

    async def _reject(self, send: Send, request_id: str) -> None:
        body = _problem_bytes(
            413,
            "payload_too_large",
            "Request body too large",
            f"request bodies are limited to {self.max_body} bytes",
            request_id,
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/problem+json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, status: int, start: float, request_id: str) -> None:
        elapsed = time.perf_counter() - start
        # Label values never come from the client: the route template (with its router's prefix),
        # and a known method or "_OTHER" — else any client could mint new time series.
        template = route_template(scope) or "unmatched"
        method = scope["method"] if scope["method"] in _HTTP_METHODS else "_OTHER"
        REQUESTS.labels(method, template, str(status)).inc()
        LATENCY.labels(method, template).observe(elapsed)
        if template not in ("/healthz", "/metrics"):
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "request_id": request_id,
                },
            )


_TRACE_CONTEXT = TraceContextTextMapPropagator()
# Any other method is "_OTHER" (semantic conventions): clients must not mint span names.
_HTTP_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})


def _remote_parent(scope: Scope) -> Context | None:
    """The caller's W3C trace context (``traceparent``/``tracestate`` only: no other header is read)."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name in (b"traceparent", b"tracestate")
    }
    return _TRACE_CONTEXT.extract(carrier) if carrier else None


def route_template(scope: Scope) -> str | None:
    """The matched route's full path template (``/v1/runs/{run_id}``), or ``None`` when unmatched.

    FastAPI keeps an included router's own route (without its prefix) in ``scope["route"]``; the
    full template is on the effective route context it records in ``scope["fastapi"]``.
    """
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    route = scope.get("route")  # the gateway fast path sets a label with only ``path``
    template = (
        getattr(effective, "path_format", None)
        or getattr(route, "path_format", None)
        or getattr(route, "path", None)
    )
    return template if isinstance(template, str) and template else None


class TracedRequestContextMiddleware(RequestContextMiddleware):
    """:class:`RequestContextMiddleware` inside an OpenTelemetry server span per HTTP request.

    Installed instead of the plain class only when tracing is enabled, so the untraced hot path
    runs no tracing code at all. The span is current while the app runs, so Temporal calls made
    by the route (StartWorkflow, signals, updates) become its children. It records the method,
    route template, status and request id: never headers, bodies, query strings or API keys, and
    exceptions only by type (their messages may quote input).
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, tracer_provider: TracerProvider) -> None:
        super().__init__(app, max_body_bytes)
        self.tracer = tracer_provider.get_tracer("nexusai.api")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _HTTP_METHODS else "_OTHER"
        status = 500
        failure: str | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            "HTTP" if method == "_OTHER" else method,
            context=_remote_parent(scope),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await super().__call__(scope, receive, send_status)
            except Exception as exc:
                failure = type(exc).__name__
                raise
            finally:
                template = route_template(scope)
                if template:
                    span.update_name(f"{'HTTP' if method == '_OTHER' else method} {template}")
                    span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status)
                request_id = (scope.get("state") or {}).get("request_id")
                if request_id:
                    span.set_attribute("nexus.request_id", request_id)
                if failure or status >= 500:
                    span.set_attribute("error.type", failure or str(status))
                    span.set_status(Status(StatusCode.ERROR))


def install_middleware(
    app: FastAPI, settings: Settings, tracer_provider: TracerProvider | None = None
) -> None:
    """Request context (ids, 413, metrics, logs; traced when ``tracer_provider``) around the gateway."""
    from api.gateway.fast import GatewayFastPath

    # Added first = innermost: the gateway's hot path runs inside the request context.
    app.add_middleware(GatewayFastPath)
    if tracer_provider is None:
        app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.api.max_body_bytes)
    else:
        app.add_middleware(
            TracedRequestContextMiddleware,
            max_body_bytes=settings.api.max_body_bytes,
            tracer_provider=tracer_provider,
        )
