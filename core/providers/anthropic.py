"""Anthropic Messages API (``POST {base_url}/v1/messages``), plain and streamed.

Mapping notes: system messages become the top-level ``system`` prompt; tool results become
``tool_result`` blocks in a user turn; ``max_tokens`` is mandatory upstream, so the adapter's
default applies when the request has none. Anthropic has no JSON mode: ``response_format``
becomes an instruction appended to the system prompt. ``input_tokens`` is normalised to
include cache reads and cache writes; ``cached_tokens`` counts cache reads.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import orjson

from core.providers.base import HttpAdapter, decode_json, elapsed_ms, malformed
from core.providers.errors import ErrorKind, ProviderError, classify
from core.providers.sse import SseEvent
from core.providers.types import (
    ChatRequest,
    ChatResponse,
    DoneEvent,
    EmbeddingRequest,
    EmbeddingResponse,
    ImagePart,
    Message,
    NamedToolChoice,
    ReasoningDelta,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

API_VERSION = "2023-06-01"
_STOP: dict[str, StopReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _image(part: ImagePart) -> dict[str, Any]:
    if part.data is not None:
        source = {"type": "base64", "media_type": part.media_type or "image/png", "data": part.data}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": part.url or ""}}


def _user_content(msg: Message) -> str | list[dict[str, Any]]:
    if not isinstance(msg.content, list) or not msg.images():
        return msg.text()
    return [
        {"type": "text", "text": p.text} if p.type == "text" else _image(p)
        for p in msg.content
        if p.type != "text" or p.text
    ]


def _arguments(text: str) -> Any:
    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}


def _json_instruction(req: ChatRequest) -> str:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return ""
    if fmt.type == "json_schema":
        schema = orjson.dumps(fmt.json_schema or {}).decode()
        return f"Respond with only a JSON object matching this JSON schema, no other text: {schema}"
    return "Respond with only a valid JSON object, no other text."


def build_payload(req: ChatRequest, default_max_tokens: int, stream: bool) -> dict[str, Any]:
    """The Messages API request body for ``req`` (``req.model`` is the upstream name)."""
    system = [m.text() for m in req.messages if m.role == "system"]
    if instruction := _json_instruction(req):
        system.append(instruction)
    messages: list[dict[str, Any]] = []
    for msg in req.messages:
        if msg.role == "system":
            continue
        if msg.role == "tool":
            block = {"type": "tool_result", "tool_use_id": msg.tool_call_id or "", "content": msg.text()}
            last = messages[-1] if messages else None
            if last and last["role"] == "user" and isinstance(last["content"], list) and last.get("_tools"):
                last["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block], "_tools": True})
        elif msg.role == "assistant" and msg.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": msg.text()}] if msg.text() else []
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _arguments(c.arguments)}
                for c in msg.tool_calls
            ]
            messages.append({"role": "assistant", "content": blocks})
        else:
            messages.append({"role": msg.role, "content": _user_content(msg)})
    for m in messages:
        m.pop("_tools", None)
    body: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.max_tokens or default_max_tokens,
        "messages": messages,
    }
    if system:
        body["system"] = "\n\n".join(s for s in system if s)
    if req.tools:
        body["tools"] = [
            {
                "name": t.name,
                "input_schema": t.parameters,
                **({"description": t.description} if t.description else {}),
            }
            for t in req.tools
        ]
    if isinstance(req.tool_choice, NamedToolChoice):
        body["tool_choice"] = {"type": "tool", "name": req.tool_choice.name}
    elif req.tool_choice is not None:
        body["tool_choice"] = {"type": {"auto": "auto", "none": "none", "required": "any"}[req.tool_choice]}
    optional = {"temperature": req.temperature, "top_p": req.top_p, "stop_sequences": req.stop}
    body.update({k: v for k, v in optional.items() if v is not None})
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if stream:
        body["stream"] = True
    return body


def parse_usage(raw: Any, previous: Usage | None = None) -> Usage:
    """Normalised usage; fields missing from ``raw`` keep their ``previous`` values (streams)."""
    base = previous or Usage()
    if not isinstance(raw, dict):
        return base
    read = raw.get("cache_read_input_tokens")
    write = raw.get("cache_creation_input_tokens")
    fresh = raw.get("input_tokens")
    cached = read if isinstance(read, int) else base.cached_tokens
    input_tokens = base.input_tokens
    if isinstance(fresh, int):
        input_tokens = fresh + cached + (write if isinstance(write, int) else 0)
    output = raw.get("output_tokens")
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output if isinstance(output, int) else base.output_tokens,
        cached_tokens=cached,
    )


def parse_response(body: Any, provider: str) -> ChatResponse:
    """A normalised response from a Messages API body."""
    if not isinstance(body, dict):
        raise malformed(provider, "body is not an object")
    if body.get("type") == "error":
        raise classify(provider, None, body)
    blocks = body.get("content")
    if not isinstance(blocks, list):
        raise malformed(provider, "message without content")
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            args = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                ToolCall(id=str(block.get("id", "")), name=str(block.get("name", "")), arguments=args)
            )
    return ChatResponse(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        provider=provider,
        content="".join(text),
        reasoning_content="".join(reasoning) or None,
        tool_calls=calls,
        stop_reason=_STOP.get(str(body.get("stop_reason")), "stop"),
        usage=parse_usage(body.get("usage")),
    )


class AnthropicStreamParser:
    """Messages API stream events -> normalised events; ``message_stop`` is terminal."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.id = ""
        self.model = ""
        self.usage = Usage()
        self.stop: StopReason = "stop"
        self.tools: dict[int, int] = {}  # content block index -> tool call ordinal
        self.done = False

    def feed(self, event: SseEvent) -> list[StreamEvent]:
        """Events for one SSE event."""
        if self.done:
            return []
        data = decode_json(event.data.encode(), self.provider)
        if not isinstance(data, dict):
            raise malformed(self.provider, "event is not an object")
        kind = data.get("type") or event.event
        if kind == "error":
            raise classify(self.provider, None, data)
        if kind == "message_start":
            message = data.get("message") or {}
            self.id = str(message.get("id") or "")
            self.model = str(message.get("model") or "")
            self.usage = parse_usage(message.get("usage"), self.usage)
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                ordinal = self.tools.setdefault(int(data.get("index", 0)), len(self.tools))
                return [ToolCallDelta(index=ordinal, id=block.get("id"), name=block.get("name"))]
            if block.get("type") == "text" and block.get("text"):
                return [TextDelta(text=str(block["text"]))]
        elif kind == "content_block_delta":
            return self._delta(int(data.get("index", 0)), data.get("delta") or {})
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            if delta.get("stop_reason"):
                self.stop = _STOP.get(str(delta["stop_reason"]), "stop")
            self.usage = parse_usage(data.get("usage"), self.usage)
        elif kind == "message_stop":
            self.done = True
            return [
                UsageEvent(usage=self.usage),
                DoneEvent(stop_reason=self.stop, id=self.id, model=self.model),
            ]
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[StreamEvent]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [TextDelta(text=str(delta["text"]))]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [ReasoningDelta(text=str(delta["thinking"]))]
        if kind == "input_json_delta" and index in self.tools:
            return [ToolCallDelta(index=self.tools[index], arguments=str(delta.get("partial_json", "")))]
        return []

    def finish(self) -> list[StreamEvent]:
        """Raise ``truncated_stream`` unless ``message_stop`` arrived."""
        if not self.done:
            raise ProviderError(
                ErrorKind.truncated_stream, "stream ended before message_stop", provider=self.provider
            )
        return []


class AnthropicAdapter(HttpAdapter):
    """Anthropic (``base_url`` ``https://api.anthropic.com``, without ``/v1``)."""

    adapter: ClassVar[str] = "anthropic"

    def auth_headers(self) -> dict[str, str]:
        """``x-api-key`` and the pinned ``anthropic-version``."""
        secret = self._secret()
        return {"anthropic-version": API_VERSION, **({"x-api-key": secret} if secret else {})}

    async def chat(self, req: ChatRequest) -> ChatResponse:
        """One Messages API call."""
        start = time.perf_counter()
        body = await self.post_json("/v1/messages", build_payload(req, self.default_max_tokens, stream=False))
        resp = parse_response(body, self.name)
        return resp.model_copy(update={"latency_ms": elapsed_ms(start), "model": resp.model or req.model})

    def stream(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """A streamed Messages API call."""
        return self.stream_sse(
            "/v1/messages",
            build_payload(req, self.default_max_tokens, stream=True),
            lambda: AnthropicStreamParser(self.name),
        )

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """Anthropic has no embeddings API: always a non-retryable ``bad_request``."""
        raise ProviderError(ErrorKind.bad_request, "anthropic offers no embeddings", provider=self.name)
