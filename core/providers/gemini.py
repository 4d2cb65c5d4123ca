"""Google Gemini API: ``generateContent``, ``streamGenerateContent?alt=sse``, embeddings.

Mapping notes: ``assistant`` is Gemini's ``model`` role; system messages become
``systemInstruction``; tool results become ``functionResponse`` parts of a user turn (named
after the call they answer). Gemini has no terminal stream event: a stream is complete when a
candidate carried a ``finishReason`` before the body ended. ``output_tokens`` is normalised
to include thought tokens (Gemini counts them apart).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import quote

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

_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}


def _stop(reason: Any, has_calls: bool) -> StopReason:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def _parts(msg: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if isinstance(msg.content, list):
        for part in msg.content:
            if part.type == "text":
                parts.append({"text": part.text})
            elif part.data is not None:
                parts.append({"inlineData": {"mimeType": part.media_type or "image/png", "data": part.data}})
            else:
                parts.append(
                    {"fileData": {"fileUri": part.url or "", "mimeType": part.media_type or "image/*"}}
                )
    elif msg.content:
        parts.append({"text": msg.content})
    return parts


def _tool_response(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"content": text}


def build_payload(req: ChatRequest) -> dict[str, Any]:
    """The ``generateContent`` request body for ``req``."""
    names = {c.id: c.name for m in req.messages for c in m.tool_calls or []}
    contents: list[dict[str, Any]] = []
    for msg in req.messages:
        if msg.role == "system":
            continue
        if msg.role == "tool":
            name = msg.name or names.get(msg.tool_call_id or "", "")
            part = {"functionResponse": {"name": name, "response": _tool_response(msg.text())}}
            if contents and contents[-1]["role"] == "user" and "functionResponse" in contents[-1]["parts"][0]:
                contents[-1]["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
            continue
        parts = _parts(msg)
        for call in msg.tool_calls or []:
            try:
                args = orjson.loads(call.arguments or "{}")
            except orjson.JSONDecodeError:
                args = {}
            parts.append({"functionCall": {"name": call.name, "args": args}})
        contents.append(
            {"role": "model" if msg.role == "assistant" else "user", "parts": parts or [{"text": ""}]}
        )
    body: dict[str, Any] = {"contents": contents}
    system = "\n\n".join(m.text() for m in req.messages if m.role == "system")
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if req.tools:
        decls = [
            {
                "name": t.name,
                "parameters": t.parameters,
                **({"description": t.description} if t.description else {}),
            }
            for t in req.tools
        ]
        body["tools"] = [{"functionDeclarations": decls}]
    if isinstance(req.tool_choice, NamedToolChoice):
        config: dict[str, Any] = {"mode": "ANY", "allowedFunctionNames": [req.tool_choice.name]}
        body["toolConfig"] = {"functionCallingConfig": config}
    elif req.tool_choice is not None:
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[req.tool_choice]
        body["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    gen: dict[str, Any] = {
        "temperature": req.temperature,
        "topP": req.top_p,
        "maxOutputTokens": req.max_tokens,
        "stopSequences": req.stop,
        "seed": req.seed,
    }
    fmt = req.response_format
    if fmt is not None and fmt.type != "text":
        gen["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.json_schema:
            gen["responseJsonSchema"] = fmt.json_schema
    gen = {k: v for k, v in gen.items() if v is not None}
    if gen:
        body["generationConfig"] = gen
    return body


def parse_usage(raw: Any) -> Usage:
    """Normalised usage from ``usageMetadata``."""
    if not isinstance(raw, dict):
        return Usage()

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) else 0

    thoughts = count("thoughtsTokenCount")
    return Usage(
        input_tokens=count("promptTokenCount") + count("toolUsePromptTokenCount"),
        output_tokens=count("candidatesTokenCount") + thoughts,
        cached_tokens=count("cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def _candidate(body: Any, provider: str) -> dict[str, Any] | None:
    """The first candidate, or None for a usage-only chunk; raises for errors and blocked prompts."""
    if isinstance(body, list) and body and isinstance(body[0], dict) and "error" in body[0]:
        raise classify(provider, None, body[0])  # errors in streams may come wrapped in a list
    if not isinstance(body, dict):
        raise malformed(provider, "body is not an object")
    if "error" in body:
        raise classify(provider, None, body)
    candidates = body.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return candidates[0]
    blocked = (body.get("promptFeedback") or {}).get("blockReason")
    if blocked:
        raise ProviderError(ErrorKind.content_filter, f"prompt blocked: {blocked}", provider=provider)
    return None


def _split_parts(candidate: dict[str, Any], first_index: int) -> tuple[str, str, list[ToolCall]]:
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if not isinstance(part, dict):
            continue
        if "functionCall" in part:
            call = part["functionCall"] or {}
            index = first_index + len(calls)
            calls.append(
                ToolCall(
                    id=str(call.get("id") or f"call_{index}"),
                    name=str(call.get("name", "")),
                    arguments=orjson.dumps(call.get("args") or {}).decode(),
                )
            )
        elif part.get("thought"):
            thoughts.append(str(part.get("text", "")))
        elif "text" in part:
            text.append(str(part["text"]))
    return "".join(text), "".join(thoughts), calls


def parse_response(body: Any, provider: str) -> ChatResponse:
    """A normalised response from a ``generateContent`` body."""
    candidate = _candidate(body, provider)
    if candidate is None:
        raise malformed(provider, "no candidates")
    text, thoughts, calls = _split_parts(candidate, 0)
    return ChatResponse(
        id=str(body.get("responseId") or ""),
        model=str(body.get("modelVersion") or ""),
        provider=provider,
        content=text,
        reasoning_content=thoughts or None,
        tool_calls=calls,
        stop_reason=_stop(candidate.get("finishReason"), bool(calls)),
        usage=parse_usage(body.get("usageMetadata")),
    )


class GeminiStreamParser:
    """``streamGenerateContent`` chunks -> normalised events; complete once a ``finishReason``
    arrived and the body ended."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.id = ""
        self.model = ""
        self.usage = Usage()
        self.calls = 0
        self.finish_reason: str | None = None

    def feed(self, event: SseEvent) -> list[StreamEvent]:
        """Events for one chunk."""
        body = decode_json(event.data.encode(), self.provider)
        candidate = _candidate(body, self.provider)
        self.id = str(body.get("responseId") or self.id)
        self.model = str(body.get("modelVersion") or self.model)
        if body.get("usageMetadata"):
            self.usage = parse_usage(body["usageMetadata"])
        if candidate is None:
            return []
        text, thoughts, calls = _split_parts(candidate, self.calls)
        out: list[StreamEvent] = []
        if thoughts:
            out.append(ReasoningDelta(text=thoughts))
        if text:
            out.append(TextDelta(text=text))
        for call in calls:
            out.append(ToolCallDelta(index=self.calls, id=call.id, name=call.name, arguments=call.arguments))
            self.calls += 1
        if candidate.get("finishReason"):
            self.finish_reason = str(candidate["finishReason"])
        return out

    def finish(self) -> list[StreamEvent]:
        """Usage and done if a ``finishReason`` was seen, else ``truncated_stream``."""
        if self.finish_reason is None:
            raise ProviderError(
                ErrorKind.truncated_stream, "stream ended without a finishReason", provider=self.provider
            )
        stop = _stop(self.finish_reason, self.calls > 0)
        return [UsageEvent(usage=self.usage), DoneEvent(stop_reason=stop, id=self.id, model=self.model)]


class GeminiAdapter(HttpAdapter):
    """Gemini (``base_url`` ``https://generativelanguage.googleapis.com/v1beta``)."""

    adapter: ClassVar[str] = "gemini"

    def auth_headers(self) -> dict[str, str]:
        """``x-goog-api-key`` (a header, so the key never appears in a URL)."""
        secret = self._secret()
        return {"x-goog-api-key": secret} if secret else {}

    @staticmethod
    def _model_path(model: str) -> str:
        return "/models/" + quote(model.removeprefix("models/"), safe="-._")

    async def chat(self, req: ChatRequest) -> ChatResponse:
        """One ``generateContent`` call."""
        start = time.perf_counter()
        body = await self.post_json(self._model_path(req.model) + ":generateContent", build_payload(req))
        resp = parse_response(body, self.name)
        return resp.model_copy(update={"latency_ms": elapsed_ms(start), "model": resp.model or req.model})

    def stream(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """One ``streamGenerateContent?alt=sse`` call."""
        return self.stream_sse(
            self._model_path(req.model) + ":streamGenerateContent",
            build_payload(req),
            lambda: GeminiStreamParser(self.name),
            params={"alt": "sse"},
        )

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """``embedContent`` for one text, ``batchEmbedContents`` for several."""
        start = time.perf_counter()
        path = self._model_path(req.model)
        dims = {"outputDimensionality": req.dimensions} if req.dimensions else {}
        requests = [{"content": {"parts": [{"text": text}]}, **dims} for text in req.input]
        try:
            if len(requests) == 1:
                body = await self.post_json(path + ":embedContent", requests[0])
                rows = [body["embedding"]]
            else:
                full = "models/" + req.model.removeprefix("models/")
                batch = {"requests": [{"model": full, **r} for r in requests]}
                body = await self.post_json(path + ":batchEmbedContents", batch)
                rows = body["embeddings"]
            vectors = [[float(x) for x in row["values"]] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise malformed(self.name, "embeddings without values") from None
        if len(vectors) != len(req.input):
            raise malformed(self.name, f"{len(vectors)} vectors for {len(req.input)} inputs")
        return EmbeddingResponse(
            model=req.model, provider=self.name, embeddings=vectors, latency_ms=elapsed_ms(start)
        )
