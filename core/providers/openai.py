"""OpenAI Chat Completions and Embeddings, and the dialect knobs its imitators need.

Mistral, DeepSeek and generic OpenAI-compatible servers reuse this adapter with a different
:class:`OpenAIDialect`. Reasoning text is read from ``reasoning_content`` (DeepSeek, vLLM) or
``reasoning`` (some hosts) in messages and stream deltas, whatever the dialect.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

from core.providers.base import HttpAdapter, decode_json, elapsed_ms, malformed
from core.providers.errors import ErrorKind, ProviderError, classify
from core.providers.sse import SseEvent
from core.providers.types import (
    ChatRequest,
    ChatResponse,
    DoneEvent,
    EmbeddingRequest,
    EmbeddingResponse,
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


@dataclass(frozen=True)
class OpenAIDialect:
    """Where an OpenAI-style API differs from OpenAI's own."""

    max_tokens_field: str = "max_completion_tokens"
    stream_options: bool = True
    send_user: bool = True
    seed_field: str | None = "seed"
    required_tool_choice: str = "required"
    strict_done: bool = True  # the stream must end with ``data: [DONE]``
    embeddings: bool = True


_FINISH: dict[str, StopReason] = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "length": "length",
    "model_length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def map_finish_reason(value: Any, provider: str) -> StopReason:
    """Normalise an OpenAI-style ``finish_reason``."""
    if value == "insufficient_system_resource":  # DeepSeek ends a generation it cannot finish
        raise ProviderError(
            ErrorKind.overloaded, "upstream ran out of resources mid-answer", provider=provider
        )
    return _FINISH.get(str(value), "stop")


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def parse_usage(raw: Any) -> Usage:
    """Usage from OpenAI, DeepSeek (``prompt_cache_hit_tokens``), Mistral, vLLM bodies."""
    if not isinstance(raw, dict):
        return Usage()
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=_int(raw.get("prompt_tokens")),
        output_tokens=_int(raw.get("completion_tokens")),
        cached_tokens=_int(prompt_details.get("cached_tokens")) or _int(raw.get("prompt_cache_hit_tokens")),
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
    )


def _message(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role}
    if isinstance(msg.content, list) and msg.images():
        parts: list[dict[str, Any]] = []
        for part in msg.content:
            if part.type == "text":
                parts.append({"type": "text", "text": part.text})
            else:
                image: dict[str, Any] = {"url": part.data_url()}
                if part.detail:
                    image["detail"] = part.detail
                parts.append({"type": "image_url", "image_url": image})
        out["content"] = parts
    else:
        out["content"] = msg.text() if msg.content is not None or not msg.tool_calls else None
    if msg.name:
        out["name"] = msg.name
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    if msg.tool_call_id:
        out["tool_call_id"] = msg.tool_call_id
    return out


def build_payload(req: ChatRequest, dialect: OpenAIDialect, stream: bool) -> dict[str, Any]:
    """The Chat Completions request body for ``req`` (``req.model`` is the upstream name)."""
    body: dict[str, Any] = {"model": req.model, "messages": [_message(m) for m in req.messages]}
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "parameters": t.parameters,
                    **({"description": t.description} if t.description else {}),
                },
            }
            for t in req.tools
        ]
    if isinstance(req.tool_choice, NamedToolChoice):
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.name}}
    elif req.tool_choice == "required":
        body["tool_choice"] = dialect.required_tool_choice
    elif req.tool_choice is not None:
        body["tool_choice"] = req.tool_choice
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema":
        schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.json_schema or {}}
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt is not None:
        body["response_format"] = {"type": fmt.type}
    optional: dict[str, Any] = {
        "temperature": req.temperature,
        "top_p": req.top_p,
        dialect.max_tokens_field: req.max_tokens,
        "stop": req.stop,
    }
    if dialect.seed_field:
        optional[dialect.seed_field] = req.seed
    if dialect.send_user:
        optional["user"] = req.user
    body.update({k: v for k, v in optional.items() if v is not None})
    if stream:
        body["stream"] = True
        if dialect.stream_options:
            body["stream_options"] = {"include_usage": True}
    return body


def _content(value: Any) -> tuple[str, str]:
    """(text, reasoning) from string content or a list of chunks (Mistral thinking models)."""
    if isinstance(value, str):
        return value, ""
    text: list[str] = []
    reasoning: list[str] = []
    for chunk in value if isinstance(value, list) else []:
        if not isinstance(chunk, dict):
            continue
        if chunk.get("type") == "text":
            text.append(str(chunk.get("text", "")))
        elif chunk.get("type") == "thinking":
            for inner in chunk.get("thinking") or []:
                if isinstance(inner, dict):
                    reasoning.append(str(inner.get("text", "")))
    return "".join(text), "".join(reasoning)


def parse_response(body: Any, provider: str) -> ChatResponse:
    """A normalised response from a Chat Completions body."""
    if not isinstance(body, dict):
        raise malformed(provider, "body is not an object")
    if "error" in body:
        raise classify(provider, None, body)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise malformed(provider, "no choices")
    choice = choices[0]
    msg = choice.get("message")
    if not isinstance(msg, dict):
        raise malformed(provider, "choice without message")
    text, reasoning = _content(msg.get("content"))
    reasoning = str(msg.get("reasoning_content") or msg.get("reasoning") or "") or reasoning
    stop = map_finish_reason(choice.get("finish_reason"), provider)
    if msg.get("refusal") and not text:
        text, stop = str(msg["refusal"]), "content_filter"
    try:
        calls = [
            ToolCall(
                id=str(c["id"]),
                name=str(c["function"]["name"]),
                arguments=c["function"].get("arguments") or "{}",
            )
            for c in msg.get("tool_calls") or []
        ]
    except (KeyError, TypeError):
        raise malformed(provider, "tool call without id or function") from None
    return ChatResponse(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        provider=provider,
        content=text,
        reasoning_content=reasoning or None,
        tool_calls=calls,
        stop_reason=stop,
        usage=parse_usage(body.get("usage")),
    )


class OpenAIStreamParser:
    """Chat Completions chunks -> normalised events; ``[DONE]`` is the terminal event."""

    def __init__(self, provider: str, strict_done: bool = True) -> None:
        self.provider = provider
        self.strict_done = strict_done
        self.id = ""
        self.model = ""
        self.stop: StopReason | None = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, event: SseEvent) -> list[StreamEvent]:
        """Events for one ``data:`` chunk."""
        if self.done:
            return []
        if event.data.strip() == "[DONE]":
            return self._close()
        chunk = decode_json(event.data.encode(), self.provider)
        if not isinstance(chunk, dict):
            raise malformed(self.provider, "chunk is not an object")
        if "error" in chunk:
            raise classify(self.provider, None, chunk)
        self.id = str(chunk.get("id") or self.id)
        self.model = str(chunk.get("model") or self.model)
        if chunk.get("usage"):
            self.usage = parse_usage(chunk["usage"])
        out: list[StreamEvent] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            text, chunk_reasoning = _content(delta.get("content"))
            if reasoning or chunk_reasoning:
                out.append(ReasoningDelta(text=str(reasoning or chunk_reasoning)))
            if text:
                out.append(TextDelta(text=text))
            for call in delta.get("tool_calls") or []:
                fn = call.get("function") or {}
                out.append(
                    ToolCallDelta(
                        index=_int(call.get("index")),
                        id=call.get("id"),
                        name=fn.get("name"),
                        arguments=fn.get("arguments") or "",
                    )
                )
            if choice.get("finish_reason"):
                self.stop = map_finish_reason(choice["finish_reason"], self.provider)
        return out

    def _close(self) -> list[StreamEvent]:
        self.done = True
        out: list[StreamEvent] = []
        if self.usage is not None:
            out.append(UsageEvent(usage=self.usage))
        out.append(DoneEvent(stop_reason=self.stop or "stop", id=self.id, model=self.model))
        return out

    def finish(self) -> list[StreamEvent]:
        """Nothing if ``[DONE]`` came; else ``truncated_stream`` (lenient dialects accept a
        ``finish_reason`` as the end)."""
        if self.done:
            return []
        if not self.strict_done and self.stop is not None:
            return self._close()
        raise ProviderError(
            ErrorKind.truncated_stream, "stream ended before its terminal event", provider=self.provider
        )


class OpenAIAdapter(HttpAdapter):
    """OpenAI's API (``base_url`` ends in ``/v1``)."""

    adapter: ClassVar[str] = "openai"
    dialect: ClassVar[OpenAIDialect] = OpenAIDialect()

    def auth_headers(self) -> dict[str, str]:
        """``Authorization: Bearer`` when a key is configured."""
        secret = self._secret()
        return {"authorization": f"Bearer {secret}"} if secret else {}

    async def chat(self, req: ChatRequest) -> ChatResponse:
        """One Chat Completions call."""
        start = time.perf_counter()
        body = await self.post_json("/chat/completions", build_payload(req, self.dialect, stream=False))
        resp = parse_response(body, self.name)
        return resp.model_copy(update={"latency_ms": elapsed_ms(start), "model": resp.model or req.model})

    def stream(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """A streamed Chat Completions call (with usage when the dialect supports it)."""
        return self.stream_sse(
            "/chat/completions",
            build_payload(req, self.dialect, stream=True),
            lambda: OpenAIStreamParser(self.name, self.dialect.strict_done),
        )

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """One ``/embeddings`` call."""
        if not self.dialect.embeddings:
            raise ProviderError(
                ErrorKind.bad_request, f"{self.name} offers no embeddings", provider=self.name
            )
        start = time.perf_counter()
        payload: dict[str, Any] = {"model": req.model, "input": req.input, "encoding_format": "float"}
        if req.dimensions is not None:
            payload["dimensions"] = req.dimensions
        if req.user and self.dialect.send_user:
            payload["user"] = req.user
        body = await self.post_json("/embeddings", payload)
        try:
            rows = sorted(body["data"], key=lambda row: int(row.get("index", 0)))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise malformed(self.name, "embeddings without data[].embedding") from None
        if len(vectors) != len(req.input):
            raise malformed(self.name, f"{len(vectors)} vectors for {len(req.input)} inputs")
        usage = body.get("usage") or {}
        return EmbeddingResponse(
            model=str(body.get("model") or req.model),
            provider=self.name,
            embeddings=vectors,
            usage=Usage(input_tokens=_int(usage.get("prompt_tokens"))),
            latency_ms=elapsed_ms(start),
        )
