"""How a request is served whatever its protocol: authenticate, parse, pick a failure, wait,
then answer in full, as a paced event stream, or broken in the way the scenario asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Protocol

from core.simulator.asgi import EventStream, Headers, Request, Send, hang, send_body, send_cut
from core.simulator.engine import (
    FAILURE_ERRORS,
    FAILURE_MESSAGES,
    REQUEST_ERRORS,
    ChatInput,
    ErrorKind,
    Reply,
    Simulator,
    request_error,
)
from core.simulator.scenario import FailureKind, FailureRule, Profile

ErrorResponse = tuple[int, bytes, Headers]


class Frame(IntEnum):
    """What a stream frame carries: pacing and cuts are decided on token and end frames."""

    META = 0
    TOKEN = 1
    END = 2


class Wire(Protocol):
    """One provider protocol: its auth, errors and response shapes."""

    def authenticate(self, sim: Simulator, req: Request) -> None:
        """Raise :class:`SimError` (``AUTH``) when the request lacks an acceptable key."""

    def error(self, kind: ErrorKind, message: str, retry_after_s: float | None = None) -> ErrorResponse:
        """Status, body and headers of an error in this provider's shape."""

    def headers(self, rid: str) -> Headers:
        """Headers of a JSON response."""

    def malformed(self) -> bytes:
        """A stream frame whose JSON does not parse."""


class ChatWire(Wire, Protocol):
    """A protocol that also answers chat requests."""

    def parse(self, req: Request, path_model: str | None) -> ChatInput:
        """Normalise the request body (raise ``SimError(BAD_REQUEST)`` when invalid)."""

    def render(self, sim: Simulator, inp: ChatInput, replies: list[Reply], rid: str) -> bytes:
        """The complete (non-streamed) response body."""

    def frames(self, sim: Simulator, inp: ChatInput, reply: Reply, rid: str) -> Iterator[tuple[bytes, Frame]]:
        """The encoded stream frames of a reply."""

    def stream_headers(self, rid: str) -> Headers:
        """Headers of a streamed response."""


async def send_request_error(send: Send, wire: Wire, exc: Exception) -> None:
    """Answer an exception raised while reading a request (400 unless it is a :class:`SimError`)."""
    error = request_error(exc)
    await send_error(send, wire, error.kind, error.message)


async def send_error(
    send: Send, wire: Wire, kind: ErrorKind, message: str, retry_after_s: float | None = None
) -> None:
    """Answer with an error in the wire's own shape."""
    status, body, headers = wire.error(kind, message, retry_after_s)
    await send_body(send, status, body, headers)


async def _fail_before_answer(
    sim: Simulator, wire: Wire, req: Request, send: Send, failure: FailureRule | None, stream: bool
) -> bool:
    """Serve the failures that happen before any byte of an answer; ``True`` if one did."""
    if failure is None:
        return False
    error = FAILURE_ERRORS.get(failure.kind)
    if error is not None:
        await send_error(send, wire, error, FAILURE_MESSAGES[error], failure.retry_after_s)
        return True
    if failure.kind is FailureKind.TIMEOUT and (not stream or not failure.after_tokens):
        if not await hang(req.receive, sim.scenario.hang_s):
            await send_error(send, wire, ErrorKind.TIMEOUT, "Request timed out (simulated).")
        return True
    return False


async def serve_simple(
    sim: Simulator,
    wire: Wire,
    req: Request,
    send: Send,
    profile: Profile,
    endpoint: str,
    build: Callable[[], bytes],
    rid: str,
) -> None:
    """Serve a non-chat call (embeddings, model lists) with the scenario's failures."""
    try:
        failure = sim.pick_failure(profile, endpoint, False, req.headers.get("x-sim-fail"))
        if await _fail_before_answer(sim, wire, req, send, failure, False):
            return
        body = build()
    except REQUEST_ERRORS as exc:
        await send_request_error(send, wire, exc)
        return
    await _send_whole(send, body, wire.headers(rid), failure)


async def _send_whole(send: Send, body: bytes, headers: Headers, failure: FailureRule | None) -> None:
    if failure is not None and failure.kind is FailureKind.MALFORMED:
        await send_body(send, 200, body[: max(1, len(body) // 2)], headers)
    elif failure is not None and failure.kind in (FailureKind.CUT, FailureKind.CUT_BEFORE_FIRST):
        await send_cut(send, 200, body, headers)
    else:
        await send_body(send, 200, body, headers)


async def serve_chat(
    sim: Simulator, wire: ChatWire, req: Request, send: Send, rid: str, path_model: str | None = None
) -> None:
    """Serve a chat request of any protocol, streamed or not, with the scenario's behaviour."""
    try:
        wire.authenticate(sim, req)
        inp = wire.parse(req, path_model)
        profile = sim.profile(inp.model)
        failure = sim.pick_failure(profile, "chat", inp.stream, req.headers.get("x-sim-fail"))
        if await _fail_before_answer(sim, wire, req, send, failure, inp.stream):
            return
        replies = [sim.reply(inp, profile, index) for index in range(max(1, inp.n))]
    except REQUEST_ERRORS as exc:
        await send_request_error(send, wire, exc)
        return
    ttft, per_token = sim.timing(profile)
    if not inp.stream:
        delay = ttft + per_token * max(r.completion_tokens for r in replies)
        if delay > 0:
            await asyncio.sleep(delay)
        await _send_whole(send, wire.render(sim, inp, replies, rid), wire.headers(rid), failure)
        return
    await _stream(sim, wire, req, send, inp, replies[0], rid, failure, ttft, per_token)


async def _stream(
    sim: Simulator,
    wire: ChatWire,
    req: Request,
    send: Send,
    inp: ChatInput,
    reply: Reply,
    rid: str,
    failure: FailureRule | None,
    ttft: float,
    per_token: float,
) -> None:
    stream = EventStream(send, wire.stream_headers(rid))
    kind = failure.kind if failure is not None else None
    if kind is FailureKind.CUT_BEFORE_FIRST:
        await stream.flush()
        return
    breaks_at = failure.after_tokens if failure is not None and failure.after_tokens is not None else 3
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    for frame, what in wire.frames(sim, inp, reply, rid):
        if (
            what is not Frame.META
            and kind in (FailureKind.CUT, FailureKind.TIMEOUT)
            and (what is Frame.END or sent == breaks_at)
        ):
            await stream.flush()
            if kind is FailureKind.TIMEOUT:
                await hang(req.receive, sim.scenario.hang_s)
            return  # unfinished response: the server drops the connection
        if what is Frame.TOKEN:
            if sent == 0 and kind is FailureKind.MALFORMED:
                stream.add(wire.malformed())
            delay = start + ttft + sent * per_token - loop.time()
            if delay > 0:
                await stream.flush()
                await asyncio.sleep(delay)
            sent += 1
        stream.add(frame)
    await stream.finish()
