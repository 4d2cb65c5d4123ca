"""Streaming parsers fed with real-shaped SSE byte streams through httpx.MockTransport,
including streams cut before their terminal event and broken connections."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.providers.anthropic import AnthropicAdapter
from core.providers.base import HttpAdapter
from core.providers.deepseek import DeepSeekAdapter
from core.providers.errors import ErrorKind, ProviderError
from core.providers.gemini import GeminiAdapter
from core.providers.openai import OpenAIAdapter
from core.providers.openai_compatible import OpenAICompatibleAdapter
from core.providers.sse import collect_stream
from core.providers.types import ChatRequest, DoneEvent, ErrorEvent, Message, StreamEvent, TextDelta

REQ = ChatRequest(model="m", messages=[Message(role="user", content="hi")])


def sse(*events: dict[str, Any] | str, named: bool = False) -> bytes:
    out = []
    for e in events:
        if isinstance(e, str):
            out.append(f"data: {e}\n\n")
        elif named:
            out.append(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n")
        else:
            out.append(f"data: {json.dumps(e)}\n\n")
    return "".join(out).encode()


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


OPENAI_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    {
        "id": "chatcmpl-1",
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 2,
            "total_tokens": 11,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    },
    "[DONE]",
]
OPENAI_TOOLS = [
    chunk(
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({}, "tool_calls"),
    "[DONE]",
]
DEEPSEEK_R1 = [
    chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
    chunk({"content": None, "reasoning_content": "Think "}),
    chunk({"content": None, "reasoning_content": "hard."}),
    chunk({"content": "42", "reasoning_content": None}),
    chunk(
        {"content": ""},
        "stop",
        usage={
            "prompt_tokens": 10,
            "completion_tokens": 30,
            "prompt_cache_hit_tokens": 4,
            "completion_tokens_details": {"reasoning_tokens": 25},
        },
    ),
    "[DONE]",
]
ANTHROPIC_STREAM = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [],
            "stop_reason": None,
            "usage": {
                "input_tokens": 25,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 0,
                "output_tokens": 1,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "Let me see."},
    },
    {"type": "content_block_stop", "index": 0},
    {"type": "ping"},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking"}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
    },
    {"type": "content_block_stop", "index": 2},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89},
    },
    {"type": "message_stop"},
]


def gemini_chunk(
    parts: list[dict[str, Any]], finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [cand], "modelVersion": "gemini-2.5-flash", "responseId": "r1"}
    if usage:
        body["usageMetadata"] = usage
    return body


GEMINI_STREAM = [
    gemini_chunk([{"text": "Plan...", "thought": True}]),
    gemini_chunk([{"text": "Hello"}]),
    gemini_chunk(
        [{"text": " world"}],
        "STOP",
        {"promptTokenCount": 8, "candidatesTokenCount": 2, "thoughtsTokenCount": 5, "totalTokenCount": 15},
    ),
]


def streaming(body: bytes, content_type: str = "text/event-stream") -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": content_type})

    return handler


class CutStream(httpx.AsyncByteStream):
    """Sends ``body`` and then loses the connection, as a proxy dropping it would."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def make(cls: type[HttpAdapter], handler: Any) -> HttpAdapter:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return cls(client=client, base_url="http://upstream.test/v1", name=cls.adapter)


async def events_of(provider: HttpAdapter) -> list[StreamEvent]:
    return [e async for e in provider.stream(REQ)]


async def test_openai_stream_text_usage_done() -> None:
    events = await events_of(make(OpenAIAdapter, streaming(sse(*OPENAI_STREAM))))
    assert [type(e).__name__ for e in events] == ["TextDelta", "TextDelta", "UsageEvent", "DoneEvent"]
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert done.stop_reason == "stop"
    assert done.id == "chatcmpl-1"
    assert done.ttft_ms is not None
    assert done.latency_ms >= done.ttft_ms
    resp = await collect_stream(make(OpenAIAdapter, streaming(sse(*OPENAI_STREAM))).stream(REQ))
    assert resp.content == "Hello"
    assert resp.usage.input_tokens == 9
    assert resp.usage.output_tokens == 2


async def test_openai_stream_tool_call_deltas_assemble() -> None:
    resp = await collect_stream(make(OpenAIAdapter, streaming(sse(*OPENAI_TOOLS))).stream(REQ))
    assert resp.stop_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in resp.tool_calls] == [
        ("call_1", "get_weather", {"city": "Paris"})
    ]


async def test_deepseek_reasoning_deltas() -> None:
    events = await events_of(make(DeepSeekAdapter, streaming(sse(*DEEPSEEK_R1))))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ReasoningDelta", "ReasoningDelta", "TextDelta", "UsageEvent", "DoneEvent"]
    resp = await collect_stream(make(DeepSeekAdapter, streaming(sse(*DEEPSEEK_R1))).stream(REQ))
    assert resp.reasoning_content == "Think hard."
    assert resp.content == "42"
    assert (resp.usage.cached_tokens, resp.usage.reasoning_tokens) == (4, 25)


async def test_anthropic_stream_thinking_text_tool_usage() -> None:
    body = sse(*ANTHROPIC_STREAM, named=True)
    resp = await collect_stream(make(AnthropicAdapter, streaming(body)).stream(REQ))
    assert resp.reasoning_content == "Let me see."
    assert resp.content == "Checking"
    assert resp.stop_reason == "tool_calls"
    assert resp.id == "msg_1"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in resp.tool_calls] == [
        ("toolu_1", "get_weather", {"city": "Paris"})
    ]
    assert (resp.usage.input_tokens, resp.usage.cached_tokens, resp.usage.output_tokens) == (125, 100, 89)


async def test_gemini_stream_thoughts_text_usage() -> None:
    resp = await collect_stream(make(GeminiAdapter, streaming(sse(*GEMINI_STREAM))).stream(REQ))
    assert resp.content == "Hello world"
    assert resp.reasoning_content == "Plan..."
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.reasoning_tokens) == (8, 7, 5)
    assert resp.stop_reason == "stop"
    assert resp.id == "r1"


TRUNCATED = [
    (OpenAIAdapter, sse(*OPENAI_STREAM[:-1])),  # everything but [DONE]
    (OpenAIAdapter, sse(*OPENAI_STREAM[:3])),
    (AnthropicAdapter, sse(*ANTHROPIC_STREAM[:-1], named=True)),  # no message_stop
    (GeminiAdapter, sse(*GEMINI_STREAM[:2])),  # no finishReason
    (OpenAICompatibleAdapter, sse(*OPENAI_STREAM[:3])),
    (OpenAIAdapter, sse(*OPENAI_STREAM[:3]) + b'data: {"id": "chatcmpl-1", "choi'),  # cut mid-event
]


@pytest.mark.parametrize(("cls", "body"), TRUNCATED)
async def test_stream_without_terminal_event_ends_with_truncated_error(
    cls: type[HttpAdapter], body: bytes
) -> None:
    events = await events_of(make(cls, streaming(body)))
    assert any(isinstance(e, TextDelta) for e in events)
    last = events[-1]
    assert isinstance(last, ErrorEvent)
    assert last.kind == "truncated_stream"
    assert last.retryable
    assert not any(isinstance(e, DoneEvent) for e in events)
    with pytest.raises(ProviderError) as info:
        await collect_stream(make(cls, streaming(body)).stream(REQ))
    assert info.value.kind is ErrorKind.truncated_stream


async def test_lenient_dialect_accepts_finish_reason_without_done() -> None:
    resp = await collect_stream(
        make(OpenAICompatibleAdapter, streaming(sse(*OPENAI_STREAM[:-1]))).stream(REQ)
    )
    assert resp.content == "Hello"
    assert resp.usage.input_tokens == 9


async def test_connection_lost_mid_stream_is_truncated_error_event() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=CutStream(sse(*OPENAI_STREAM[:3]))
        )

    events = await events_of(make(OpenAIAdapter, handler))
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].kind == "truncated_stream"


@pytest.mark.parametrize("body", [b"", b": keep-alive\n\n"])
async def test_cut_before_first_event_raises_so_caller_can_fall_back(body: bytes) -> None:
    with pytest.raises(ProviderError) as info:
        await events_of(make(OpenAIAdapter, streaming(body)))
    assert info.value.kind is ErrorKind.truncated_stream
    assert info.value.retryable

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=CutStream(body))

    with pytest.raises(ProviderError) as info:
        await events_of(make(AnthropicAdapter, handler))
    assert info.value.kind is ErrorKind.truncated_stream


async def test_in_stream_error_events() -> None:
    anthropic = sse(
        ANTHROPIC_STREAM[0],
        ANTHROPIC_STREAM[5],
        ANTHROPIC_STREAM[6],
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        named=True,
    )
    events = await events_of(make(AnthropicAdapter, streaming(anthropic)))
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].kind == "overloaded"
    assert events[-1].retryable
    openai = sse(OPENAI_STREAM[1], {"error": {"message": "The server had an error", "type": "server_error"}})
    events = await events_of(make(OpenAIAdapter, streaming(openai)))
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].kind == "server"


async def test_malformed_chunk_mid_stream() -> None:
    body = sse(*OPENAI_STREAM[:2]) + b"data: {not json}\n\n"
    events = await events_of(make(OpenAIAdapter, streaming(body)))
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].kind == "malformed_response"


async def test_json_error_answer_to_stream_request() -> None:
    body = json.dumps({"error": {"message": "Overloaded", "type": "overloaded_error"}}).encode()
    with pytest.raises(ProviderError) as info:
        await events_of(make(OpenAIAdapter, streaming(body, "application/json")))
    assert info.value.kind is ErrorKind.overloaded


async def test_crlf_and_multiline_sse_framing() -> None:
    body = sse(*OPENAI_STREAM).replace(b"\n", b"\r\n")
    resp = await collect_stream(make(OpenAIAdapter, streaming(body)).stream(REQ))
    assert resp.content == "Hello"
