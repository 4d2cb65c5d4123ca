"""Server-Sent Events decoding, and folding a normalised event stream back into a response."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from core.providers.errors import ErrorKind, ProviderError
from core.providers.types import (
    ChatResponse,
    DoneEvent,
    ErrorEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)


@dataclass(frozen=True)
class SseEvent:
    """One dispatched SSE event (``event`` defaults to ``message``)."""

    event: str
    data: str


async def iter_sse(lines: AsyncIterable[str]) -> AsyncIterator[SseEvent]:
    """Decode SSE from text lines (``httpx.Response.aiter_lines()``).

    An event is dispatched at a blank line; per the SSE spec an unterminated event at the end
    of the stream is discarded, so a cut-off final event is never mistaken for a complete one.
    """
    event = ""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value


def error_event(err: ProviderError) -> ErrorEvent:
    """The stream event for an error that happened after the stream started."""
    return ErrorEvent(
        kind=err.kind.value,
        message=err.message,
        retryable=err.retryable,
        status=err.status,
        retry_after_s=err.retry_after_s,
        provider=err.provider,
    )


def error_from_event(event: ErrorEvent) -> ProviderError:
    """Turn an :class:`ErrorEvent` back into the error it reported."""
    return ProviderError(
        ErrorKind(event.kind),
        event.message,
        provider=event.provider,
        status=event.status,
        retry_after_s=event.retry_after_s,
        retryable=event.retryable,
    )


async def collect_stream(events: AsyncIterable[StreamEvent], provider: str = "") -> ChatResponse:
    """Fold a stream into a :class:`ChatResponse`; raise the error of an ``error`` event, or
    ``truncated_stream`` if the stream ends without ``done``."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    usage = Usage()
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = calls.setdefault(event.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = event.id or call["id"]
            call["name"] = event.name or call["name"]
            call["arguments"] += event.arguments
        elif isinstance(event, UsageEvent):
            usage = event.usage
        elif isinstance(event, ErrorEvent):
            raise error_from_event(event)
        elif isinstance(event, DoneEvent):
            return ChatResponse(
                id=event.id,
                model=event.model,
                provider=provider,
                content="".join(text),
                reasoning_content="".join(reasoning) or None,
                tool_calls=[
                    ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
                    for _, c in sorted(calls.items())
                ],
                stop_reason=event.stop_reason,
                usage=usage,
                latency_ms=event.latency_ms,
                ttft_ms=event.ttft_ms,
            )
    raise ProviderError(ErrorKind.truncated_stream, "stream ended without a done event", provider=provider)
