"""Bare ASGI plumbing for the simulator: parsed requests and the few ways of answering.

The simulator is the upstream of a gateway benchmark, so it avoids framework layers: a
response is one ``http.response.start`` and one (or, when streaming, several) body messages.
Leaving a response unfinished on purpose is how a connection is cut: uvicorn then closes the
socket without the final chunk, exactly what a client sees when a provider drops a stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

SIMULATED: tuple[bytes, bytes] = (b"x-nexus-simulated", b"true")
JSON_HEADERS: Headers = [(b"content-type", b"application/json"), SIMULATED]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    SIMULATED,
]


@dataclass(slots=True)
class Request:
    """The parts of an HTTP request the protocols look at (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    receive: Receive


async def read_request(scope: Scope, receive: Receive) -> Request:
    """Read the whole body of an HTTP request."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    raw_query: bytes = scope.get("query_string", b"")
    return Request(
        method=scope["method"],
        path=scope["path"],
        query=dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else {},
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
        body=chunks[0] if len(chunks) == 1 else b"".join(chunks),
        receive=receive,
    )


async def send_body(send: Send, status: int, body: bytes, headers: Headers = JSON_HEADERS) -> None:
    """Send a complete response with a Content-Length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_cut(send: Send, status: int, body: bytes, headers: Headers = JSON_HEADERS) -> None:
    """Send half of a body without finishing the response: the server then drops the connection."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})


async def hang(receive: Receive, limit_s: float) -> bool:
    """Wait until the client disconnects (``True``) or ``limit_s`` passes (``False``)."""
    try:
        async with asyncio.timeout(limit_s):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


class EventStream:
    """A streamed response that buffers frames until the next pause, then writes them at once."""

    def __init__(self, send: Send, headers: Headers = SSE_HEADERS) -> None:
        self._send = send
        self._headers = headers
        self._pending: list[bytes] = []
        self.started = False

    def add(self, frame: bytes) -> None:
        """Queue a frame; it is written at the next :meth:`flush`."""
        self._pending.append(frame)

    async def flush(self) -> None:
        """Write the queued frames (starting the response if needed)."""
        if not self.started:
            self.started = True
            await self._send({"type": "http.response.start", "status": 200, "headers": self._headers})
        if self._pending:
            body = b"".join(self._pending)
            self._pending.clear()
            await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def finish(self) -> None:
        """Write what is queued and end the response properly."""
        await self.flush()
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})
