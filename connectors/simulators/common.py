"""Shared simulator machinery: fault injection, request counting and optional latency.

``SimulatorBase`` wraps a vendor's Starlette routes in one ASGI callable that, before the
vendor logic runs, counts the request, sleeps the configured latency and applies the injected
faults. Tests and the conformance suite hold the simulator object and inspect its state
directly (the server runs in a thread of the same process).
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

SEED_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "MERGE", "DELETE"})


def seeded_time(index: int) -> datetime:
    """Deterministic modification time of seeded record ``index``.

    Three records share each second so that sync checkpoints must break ties by id.
    """
    return SEED_EPOCH + timedelta(seconds=index // 3)


class Faults:
    """Faults to inject into the next requests (thread-safe counters)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.throttle = 0
        self.retry_after = 1.0
        self.unavailable = 0
        self.lose_write_responses = 0

    def throttle_next(self, count: int = 1, retry_after: float = 1.0) -> None:
        """The next ``count`` requests answer 429 with ``Retry-After: retry_after``."""
        with self._lock:
            self.throttle, self.retry_after = count, retry_after

    def unavailable_next(self, count: int = 1) -> None:
        """The next ``count`` requests answer 503."""
        with self._lock:
            self.unavailable = count

    def lose_next_write_response(self, count: int = 1) -> None:
        """The next ``count`` writes are committed, then answered with 503 (a lost response)."""
        with self._lock:
            self.lose_write_responses = count

    def take(self, name: str) -> bool:
        """Consume one pending fault ``name`` if any."""
        with self._lock:
            pending: int = getattr(self, name)
            if pending <= 0:
                return False
            setattr(self, name, pending - 1)
            return True

    def clear(self) -> None:
        """Drop all pending faults."""
        with self._lock:
            self.throttle = self.unavailable = self.lose_write_responses = 0


class SimulatorBase:
    """An in-memory vendor API: subclasses build ``routes()`` and the vendor error bodies."""

    name = "simulator"

    def __init__(self, *, latency: float = 0.0) -> None:
        self.faults = Faults()
        self.latency = latency
        self.requests = 0
        self.request_log: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._app = Starlette(routes=self.routes())

    def routes(self) -> list[Any]:
        """The vendor's routes (Starlette ``Route`` objects)."""
        raise NotImplementedError

    def throttled_response(self, retry_after: float) -> Response:
        """The vendor's 429 answer."""
        return JSONResponse(
            {"error": "rate limit exceeded"}, status_code=429, headers={"Retry-After": f"{retry_after:g}"}
        )

    def unavailable_response(self) -> Response:
        """The vendor's 503 answer."""
        return JSONResponse({"error": "service unavailable"}, status_code=503)

    def reset_counters(self) -> None:
        """Forget the request count and log."""
        with self.lock:
            self.requests = 0
            self.request_log.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method = scope["method"]
        with self.lock:
            self.requests += 1
            self.request_log.append((method, scope["path"]))
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.faults.take("throttle"):
            await self.throttled_response(self.faults.retry_after)(scope, receive, send)
            return
        if self.faults.take("unavailable"):
            await self.unavailable_response()(scope, receive, send)
            return
        if method in _WRITE_METHODS and self.faults.take("lose_write_responses"):
            # the write is applied, then the answer is replaced: the client sees a failure
            async def discard(message: Message) -> None:
                return None

            await self._app(scope, receive, discard)
            await self.unavailable_response()(scope, receive, send)
            return
        await self._app(scope, receive, send)
