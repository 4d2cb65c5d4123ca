"""Anthropic's Messages API: ``POST /v1/messages`` (JSON and its SSE event sequence),
``POST /v1/messages/count_tokens`` and the Anthropic shape of ``GET /v1/models``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import orjson

from core.simulator.asgi import JSON_HEADERS, SSE_HEADERS, Headers, Request, Send
from core.simulator.content import split_pieces
from core.simulator.driver import (
    ErrorResponse,
    Frame,
    send_request_error,
    serve_chat,
    serve_simple,
)
from core.simulator.engine import (
    REQUEST_ERRORS,
    ChatInput,
    ErrorKind,
    Reply,
    SimError,
    Simulator,
    ToolSpec,
    new_id,
)
from core.simulator.scenario import listed_models

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERRORS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.BAD_REQUEST: (400, "invalid_request_error"),
    ErrorKind.AUTH: (401, "authentication_error"),
    ErrorKind.PERMISSION: (403, "permission_error"),
    ErrorKind.NOT_FOUND: (404, "not_found_error"),
    ErrorKind.CONTEXT_LENGTH: (400, "invalid_request_error"),
    ErrorKind.RATE_LIMIT: (429, "rate_limit_error"),
    ErrorKind.SERVER_ERROR: (500, "api_error"),
    ErrorKind.OVERLOADED: (529, "overloaded_error"),
    ErrorKind.TIMEOUT: (504, "timeout_error"),
}


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _blocks_text(content: Any) -> tuple[str, bool]:
    """Text of a message content (string or blocks) and whether it holds a tool_result."""
    if isinstance(content, str):
        return content, False
    texts: list[str] = []
    has_result = False
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            texts.append(orjson.dumps(block.get("input", {})).decode())
        elif kind == "tool_result":
            has_result = True
            inner, _ = _blocks_text(block.get("content", ""))
            texts.append(inner)
    return "".join(texts), has_result


class AnthropicWire:
    """Auth, errors and shapes of the Anthropic API."""

    def authenticate(self, sim: Simulator, req: Request) -> None:
        """``x-api-key`` (or a Bearer token) and the mandatory ``anthropic-version``."""
        auth = sim.scenario.auth
        bearer = req.headers.get("authorization", "")
        key = req.headers.get("x-api-key") or (bearer[7:].strip() if bearer[:7].lower() == "bearer " else "")
        if auth.required and not key:
            raise SimError(ErrorKind.AUTH, "x-api-key header is required")
        if auth.keys and key not in auth.keys:
            raise SimError(ErrorKind.AUTH, "invalid x-api-key")
        if "anthropic-version" not in req.headers:
            raise SimError(ErrorKind.BAD_REQUEST, "anthropic-version: header is required")

    def error(self, kind: ErrorKind, message: str, retry_after_s: float | None = None) -> ErrorResponse:
        """``{"type": "error", "error": {"type", "message"}}`` (529 for overloaded)."""
        status, etype = _ERRORS[kind]
        body = orjson.dumps({"type": "error", "error": {"type": etype, "message": message}})
        headers = [*JSON_HEADERS, (b"request-id", new_id("req_").encode())]
        if retry_after_s is not None and kind in (ErrorKind.RATE_LIMIT, ErrorKind.OVERLOADED):
            headers.append((b"retry-after", str(math.ceil(retry_after_s)).encode()))
        return status, body, headers

    def headers(self, rid: str) -> Headers:
        """JSON headers with ``request-id``."""
        return [*JSON_HEADERS, (b"request-id", rid.encode())]

    def stream_headers(self, rid: str) -> Headers:
        """SSE headers with ``request-id``."""
        return [*SSE_HEADERS, (b"request-id", rid.encode())]

    def malformed(self) -> bytes:
        """An event whose JSON is cut short."""
        return (
            b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"ty\n\n'
        )

    def parse(self, req: Request, path_model: str | None) -> ChatInput:
        """Normalise a Messages API body."""
        body = _json_body(req)
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise SimError(ErrorKind.BAD_REQUEST, "model: Field required")
        if not isinstance(body.get("max_tokens"), int):
            raise SimError(ErrorKind.BAD_REQUEST, "max_tokens: Field required")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise SimError(ErrorKind.BAD_REQUEST, "messages: at least one message is required")
        system, _ = _blocks_text(body.get("system", ""))
        texts = [system] if system else []
        last_user, after_result = "", False
        for message in messages:
            text, has_result = _blocks_text(message.get("content", ""))
            texts.append(text)
            if message.get("role") == "user":
                after_result = has_result
                if not has_result:
                    last_user = text
        tools = [
            ToolSpec(t["name"], t.get("input_schema"))
            for t in body.get("tools") or []
            if isinstance(t, dict) and isinstance(t.get("name"), str)
        ]
        choice = body.get("tool_choice") or {}
        choice_type = choice.get("type", "auto") if isinstance(choice, dict) else "auto"
        tool_choice = {"any": "required", "tool": str(choice.get("name", ""))}.get(choice_type, choice_type)
        thinking = body.get("thinking") or {}
        return ChatInput(
            model=model,
            texts=texts,
            last_user=last_user,
            stream=bool(body.get("stream")),
            tools=tools,
            tool_choice=tool_choice,
            after_tool_result=after_result and messages[-1].get("role") == "user",
            max_tokens=body["max_tokens"],
            stop=[s for s in body.get("stop_sequences") or [] if isinstance(s, str)],
            extra_prompt_text=orjson.dumps(body["tools"]).decode() if body.get("tools") else "",
            reasoning=isinstance(thinking, dict) and thinking.get("type") == "enabled",
        )

    def _stop(self, reply: Reply) -> str:
        return "stop_sequence" if reply.stop_sequence is not None else _STOP[reply.finish]

    def _usage(self, reply: Reply) -> dict[str, Any]:
        return {
            "input_tokens": reply.prompt_tokens,
            "output_tokens": reply.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        }

    def render(self, sim: Simulator, inp: ChatInput, replies: list[Reply], rid: str) -> bytes:
        """A ``message`` object."""
        reply = replies[0]
        content: list[dict[str, Any]] = []
        if reply.reasoning:
            content.append({"type": "thinking", "thinking": reply.reasoning, "signature": _signature(rid)})
        if reply.text or not reply.tool_calls:
            content.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            content.append(
                {
                    "type": "tool_use",
                    "id": _tool_id(call.id),
                    "name": call.name,
                    "input": orjson.loads(call.arguments),
                }
            )
        return orjson.dumps(
            {
                "id": rid,
                "type": "message",
                "role": "assistant",
                "model": sim.display_model(inp.model),
                "content": content,
                "stop_reason": self._stop(reply),
                "stop_sequence": reply.stop_sequence,
                "usage": self._usage(reply),
            }
        )

    def frames(self, sim: Simulator, inp: ChatInput, reply: Reply, rid: str) -> Iterator[tuple[bytes, Frame]]:
        """message_start, per block start / deltas / stop, message_delta, message_stop."""
        start_usage = {**self._usage(reply), "output_tokens": 1}
        message: dict[str, Any] = {
            "id": rid,
            "type": "message",
            "role": "assistant",
            "model": sim.display_model(inp.model),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        yield _event("message_start", {"type": "message_start", "message": message}), Frame.META
        index = 0
        if reply.reasoning:
            yield from _block(
                index,
                {"type": "thinking", "thinking": ""},
                "thinking_delta",
                "thinking",
                split_pieces(reply.reasoning),
            )
            yield (
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": _signature(rid)},
                    },
                ),
                Frame.META,
            )
            yield _event("content_block_stop", {"type": "content_block_stop", "index": index}), Frame.META
            index += 1
        if reply.text or not reply.tool_calls:
            yield from _block(
                index,
                {"type": "text", "text": ""},
                "text_delta",
                "text",
                split_pieces(reply.text) if reply.text else [],
            )
            yield _event("content_block_stop", {"type": "content_block_stop", "index": index}), Frame.META
            index += 1
        for call in reply.tool_calls:
            head = {"type": "tool_use", "id": _tool_id(call.id), "name": call.name, "input": {}}
            parts = [call.arguments[i : i + 8] for i in range(0, len(call.arguments), 8)]
            yield from _block(index, head, "input_json_delta", "partial_json", parts)
            yield _event("content_block_stop", {"type": "content_block_stop", "index": index}), Frame.META
            index += 1
        delta = {"stop_reason": self._stop(reply), "stop_sequence": reply.stop_sequence}
        usage = {"output_tokens": reply.completion_tokens}
        yield _event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}), Frame.END
        yield _event("message_stop", {"type": "message_stop"}), Frame.END


def _block(
    index: int, head: dict[str, Any], delta_type: str, field: str, parts: list[str]
) -> Iterator[tuple[bytes, Frame]]:
    yield (
        _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": head}),
        Frame.META,
    )
    if index == 0:
        yield _event("ping", {"type": "ping"}), Frame.META
    for part in parts:
        delta = {"type": delta_type, field: part}
        yield (
            _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            Frame.TOKEN,
        )


def _tool_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def _signature(rid: str) -> str:
    return "nexus-sim-signature-" + rid


def _json_body(req: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise SimError(ErrorKind.BAD_REQUEST, f"There was an issue with your request body: {exc}") from exc
    if not isinstance(body, dict):
        raise SimError(ErrorKind.BAD_REQUEST, "The request body must be a JSON object.")
    return body


WIRE = AnthropicWire()


async def messages(sim: Simulator, req: Request, send: Send) -> None:
    """``POST /v1/messages``."""
    await serve_chat(sim, WIRE, req, send, new_id("msg_"))


async def count_tokens(sim: Simulator, req: Request, send: Send) -> None:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": n}``."""
    try:
        WIRE.authenticate(sim, req)
        body = _json_body(req)
        body.setdefault("max_tokens", 1)
        req.body = orjson.dumps(body)
        inp = WIRE.parse(req, None)
        tokens = sim.prompt_tokens(inp)
        profile = sim.profile(inp.model)
    except REQUEST_ERRORS as exc:
        await send_request_error(send, WIRE, exc)
        return
    payload = orjson.dumps({"input_tokens": tokens})
    await serve_simple(sim, WIRE, req, send, profile, "chat", lambda: payload, new_id("req_"))


async def list_models(sim: Simulator, req: Request, send: Send) -> None:
    """``GET /v1/models`` as Anthropic answers it (when called with ``anthropic-version``)."""
    try:
        WIRE.authenticate(sim, req)
    except REQUEST_ERRORS as exc:
        await send_request_error(send, WIRE, exc)
        return
    names = listed_models(sim.scenario)
    data = [
        {"type": "model", "id": n, "display_name": n, "created_at": "2025-01-01T00:00:00Z"} for n in names
    ]
    body = orjson.dumps(
        {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }
    )
    await serve_simple(sim, WIRE, req, send, sim.server_profile(), "models", lambda: body, new_id("req_"))
