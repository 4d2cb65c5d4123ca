"""Request mapping and response parsing of each adapter, and the registry, over httpx.MockTransport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from core.providers.anthropic import AnthropicAdapter
from core.providers.base import HttpAdapter, Provider
from core.providers.catalog import Catalog
from core.providers.deepseek import DeepSeekAdapter
from core.providers.errors import ErrorKind, ProviderError
from core.providers.gemini import GeminiAdapter
from core.providers.mistral import MistralAdapter
from core.providers.openai import OpenAIAdapter
from core.providers.registry import ProviderRegistry
from core.providers.settings import ProvidersSettings
from core.providers.types import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolDefinition,
)

KEY = "test-key-0123456789"
TOOL = ToolDefinition(
    name="get_weather",
    description="Weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
FULL = ChatRequest(
    model="up-model",
    messages=[
        Message(role="system", content="Be brief."),
        Message(
            role="user",
            content=[TextPart(text="What is here?"), ImagePart(data="aGk=", media_type="image/png")],
        ),
        Message(
            role="assistant",
            content=None,
            tool_calls=[ToolCall(id="c1", name="get_weather", arguments='{"city":"Paris"}')],
        ),
        Message(role="tool", tool_call_id="c1", content='{"temp": 21}'),
    ],
    tools=[TOOL],
    tool_choice="required",
    response_format=ResponseFormat(type="json_schema", json_schema={"type": "object"}, name="answer"),
    temperature=0.2,
    max_tokens=50,
    stop="END",
    seed=7,
    user="u1",
    metadata={"tenant": "t"},
)


class Recorder:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json=self.answer)

    @property
    def body(self) -> dict[str, Any]:
        return dict(json.loads(self.requests[-1].content))


def make(cls: type[HttpAdapter], rec: Recorder, base: str = "http://u.test/v1") -> HttpAdapter:
    client = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    return cls(client=client, base_url=base, api_key=SecretStr(KEY), name=cls.adapter)


OPENAI_ANSWER = {
    "id": "chatcmpl-9",
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": '{"a": 1}'}, "finish_reason": "stop"}
    ],
    "usage": {
        "prompt_tokens": 20,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 10},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


async def test_openai_request_and_response() -> None:
    rec = Recorder(OPENAI_ANSWER)
    resp = await make(OpenAIAdapter, rec).chat(FULL)
    req = rec.requests[-1]
    assert str(req.url) == "http://u.test/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    body = rec.body
    assert body["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,aGk="},
    }
    assert body["messages"][2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert body["messages"][3] == {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "c1"}
    assert body["tool_choice"] == "required"
    assert body["max_completion_tokens"] == 50
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}},
    }
    assert body["stop"] == ["END"]
    assert body["seed"] == 7
    assert body["user"] == "u1"
    assert "metadata" not in body  # internal only
    assert (resp.content, resp.stop_reason, resp.usage.cached_tokens, resp.id) == (
        '{"a": 1}',
        "stop",
        10,
        "chatcmpl-9",
    )
    assert resp.latency_ms > 0


async def test_openai_stream_request_asks_for_usage() -> None:
    rec = Recorder({})
    with pytest.raises(ProviderError):
        async for _ in make(OpenAIAdapter, rec).stream(FULL):
            pass
    assert rec.body["stream"] is True
    assert rec.body["stream_options"] == {"include_usage": True}


async def test_mistral_and_deepseek_dialects() -> None:
    rec = Recorder(OPENAI_ANSWER)
    await make(MistralAdapter, rec).chat(FULL)
    body = rec.body
    assert body["tool_choice"] == "any"
    assert body["random_seed"] == 7
    assert body["max_tokens"] == 50
    assert "user" not in body
    assert "seed" not in body
    rec = Recorder(
        {
            "id": "d",
            "model": "deepseek-reasoner",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "42", "reasoning_content": "thinking"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 9, "prompt_cache_hit_tokens": 2},
        }
    )
    resp = await make(DeepSeekAdapter, rec).chat(FULL)
    assert (resp.content, resp.reasoning_content, resp.usage.cached_tokens) == ("42", "thinking", 2)
    with pytest.raises(ProviderError) as info:
        await make(DeepSeekAdapter, rec).embed(EmbeddingRequest(model="x", input="a"))
    assert info.value.kind is ErrorKind.bad_request


async def test_anthropic_request_and_response() -> None:
    rec = Recorder(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
            "stop_reason": "tool_use",
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 30,
                "cache_creation_input_tokens": 5,
                "output_tokens": 7,
            },
        }
    )
    resp = await make(AnthropicAdapter, rec, base="http://u.test").chat(FULL)
    req = rec.requests[-1]
    assert str(req.url) == "http://u.test/v1/messages"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    body = rec.body
    assert body["system"].startswith("Be brief.")
    assert "JSON schema" in body["system"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"][1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": "aGk=",
    }
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": '{"temp": 21}'}
    ]
    assert body["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}
    assert body["tool_choice"] == {"type": "any"}
    assert body["stop_sequences"] == ["END"]
    assert body["max_tokens"] == 50
    assert body["metadata"] == {"user_id": "u1"}
    assert resp.stop_reason == "tool_calls"
    assert json.loads(resp.tool_calls[0].arguments) == {"city": "Oslo"}
    assert (resp.usage.input_tokens, resp.usage.cached_tokens, resp.usage.output_tokens) == (45, 30, 7)


async def test_gemini_request_and_response() -> None:
    rec = Recorder(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "hmm", "thought": True},
                            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                        ],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 12,
                "candidatesTokenCount": 4,
                "thoughtsTokenCount": 6,
                "cachedContentTokenCount": 2,
            },
            "modelVersion": "gemini-2.5-flash",
            "responseId": "abc",
        }
    )
    resp = await make(GeminiAdapter, rec, base="http://u.test/v1beta").chat(
        FULL.model_copy(update={"tool_choice": NamedToolChoice(name="get_weather")})
    )
    req = rec.requests[-1]
    assert str(req.url) == "http://u.test/v1beta/models/up-model:generateContent"
    assert req.headers["x-goog-api-key"] == KEY
    assert KEY not in str(req.url)
    body = rec.body
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "aGk="}}
    assert body["contents"][1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    ]
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    gen = body["generationConfig"]
    assert gen["responseMimeType"] == "application/json"
    assert gen["maxOutputTokens"] == 50
    assert gen["stopSequences"] == ["END"]
    assert resp.stop_reason == "tool_calls"
    assert resp.reasoning_content == "hmm"
    assert (
        resp.usage.input_tokens,
        resp.usage.output_tokens,
        resp.usage.reasoning_tokens,
        resp.usage.cached_tokens,
    ) == (12, 10, 6, 2)


async def test_gemini_blocked_prompt_is_content_filter() -> None:
    rec = Recorder({"promptFeedback": {"blockReason": "SAFETY"}})
    with pytest.raises(ProviderError) as info:
        await make(GeminiAdapter, rec).chat(FULL)
    assert info.value.kind is ErrorKind.content_filter
    assert not info.value.retryable


async def test_embeddings_openai_and_gemini() -> None:
    rec = Recorder(
        {
            "data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}],
            "model": "m",
            "usage": {"prompt_tokens": 4},
        }
    )
    resp = await make(OpenAIAdapter, rec).embed(EmbeddingRequest(model="m", input=["a", "b"], dimensions=2))
    assert resp.embeddings == [[1.0, 0.0], [0.0, 1.0]]
    assert resp.usage.input_tokens == 4
    assert rec.body["dimensions"] == 2
    rec = Recorder({"embeddings": [{"values": [0.1]}, {"values": [0.2]}]})
    resp = await make(GeminiAdapter, rec).embed(
        EmbeddingRequest(model="gemini-embedding-001", input=["a", "b"])
    )
    assert resp.embeddings == [[0.1], [0.2]]
    assert str(rec.requests[-1].url).endswith(":batchEmbedContents")
    rec = Recorder({"embedding": {"values": [0.3]}})
    resp = await make(GeminiAdapter, rec).embed(EmbeddingRequest(model="gemini-embedding-001", input="a"))
    assert resp.embeddings == [[0.3]]
    assert str(rec.requests[-1].url).endswith(":embedContent")


async def test_registry_routes_catalog_ids_to_upstream_names() -> None:
    rec = Recorder(OPENAI_ANSWER)
    settings = ProvidersSettings(simulator_url="http://sim.test", anthropic_api_key=SecretStr(KEY))
    registry = ProviderRegistry(
        Catalog.load(settings), settings, httpx.AsyncClient(transport=httpx.MockTransport(rec))
    )
    assert isinstance(registry, Provider)
    assert isinstance(registry.adapter("sim-openai"), Provider)
    resp = await registry.chat(
        ChatRequest(model="sim-openai/gpt-4o-mini", messages=[Message(role="user", content="hi")])
    )
    assert str(rec.requests[-1].url) == "http://sim.test/v1/chat/completions"
    assert rec.requests[-1].headers["authorization"] == "Bearer sim-local-key"  # checked like a real key
    assert rec.body["model"] == "gpt-4o-mini"
    assert (resp.model, resp.provider) == ("sim-openai/gpt-4o-mini", "sim-openai")
    with pytest.raises(ProviderError) as info:
        await registry.chat(
            ChatRequest(
                model="sim-deepseek/deepseek-reasoner",
                messages=[Message(role="user", content="hi")],
                tools=[TOOL],
            )
        )
    assert info.value.kind is ErrorKind.bad_request
    assert "tools" in info.value.message
    rec.answer = {"data": [{"index": 0, "embedding": [0.5] * 384}]}
    emb = await registry.embed(
        EmbeddingRequest(model="sim-openai/text-embedding-3-small", input="hello world")
    )
    assert len(emb.embeddings[0]) == 384
    assert emb.usage.input_tokens == 2
    with pytest.raises(ProviderError):
        await registry.embed(EmbeddingRequest(model="sim-openai/gpt-4o-mini", input="x"))
    rec.answer = {
        "id": "m",
        "type": "message",
        "model": "c",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    await registry.chat(
        ChatRequest(model="anthropic/claude-3-5-haiku", messages=[Message(role="user", content="hi")])
    )
    assert rec.requests[-1].headers["x-api-key"] == KEY
    assert rec.body["max_tokens"] == 4096
    assert KEY not in repr(registry)
    assert KEY not in repr(registry.adapter("anthropic"))
