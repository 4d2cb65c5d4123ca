"""The simulator's three wire protocols, in process over httpx.ASGITransport."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from core.simulator import create_app, parse_scenario

SCENARIO = """
seed: 1
models:
  gpt-4o-mini: {}
  text-embedding-3-small: {embedding_dim: 1536}
  every-third: {failures: [{kind: rate_limit, every: 3, retry_after_s: 7}]}
  first-two: {failures: [{kind: server_error, first: 2}]}
rules:
  - {match: "(?i)capital of france", answer: "Paris."}
  - {match: "(?i)weather", tool: get_weather, arguments: {location: Oslo}}
"""
OPENAI = {"Authorization": "Bearer sk-test"}
ANTHROPIC = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
GEMINI = {"x-goog-api-key": "test"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(parse_scenario(SCENARIO))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as c:
        yield c


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.replace("\r\n", "\n").split("\n") if line.startswith("data: ")]


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], orjson.loads(lines["data"])))
    return out


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


# --- OpenAI ---------------------------------------------------------------------------------


async def test_openai_chat_is_marked_simulated_and_deterministic(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/chat/completions", json=chat("Explain queues"), headers=OPENAI)
    second = await client.post("/v1/chat/completions", json=chat("Explain queues"), headers=OPENAI)
    assert first.status_code == 200
    assert first.headers["x-nexus-simulated"] == "true"
    body = first.json()
    assert body["object"] == "chat.completion"
    assert body["system_fingerprint"] == "nexus-sim"
    assert body["choices"][0]["message"]["content"] == second.json()["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


async def test_openai_rule_answer_and_stop_and_n(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=chat("capital of France?", n=2), headers=OPENAI)
    assert [c["message"]["content"] for c in r.json()["choices"]] == ["Paris.", "Paris."]
    r = await client.post("/v1/chat/completions", json=chat("capital of France?", stop=["."]), headers=OPENAI)
    assert r.json()["choices"][0]["message"]["content"] == "Paris"
    r = await client.post("/v1/chat/completions", json=chat("anything", max_tokens=2), headers=OPENAI)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert r.json()["usage"]["completion_tokens"] <= 2


async def test_openai_stream_with_usage(client: httpx.AsyncClient) -> None:
    body = chat("Explain queues", stream=True, stream_options={"include_usage": True})
    r = await client.post("/v1/chat/completions", json=body, headers=OPENAI)
    assert r.headers["content-type"].startswith("text/event-stream")
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    plain = await client.post("/v1/chat/completions", json=chat("Explain queues"), headers=OPENAI)
    assert text == plain.json()["choices"][0]["message"]["content"]


async def test_openai_tool_calls_plain_and_streamed(client: httpx.AsyncClient) -> None:
    body = chat("What's the weather?", tools=[WEATHER_TOOL])
    r = await client.post("/v1/chat/completions", json=body, headers=OPENAI)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"location": "Oslo"}
    r = await client.post("/v1/chat/completions", json={**body, "stream": True}, headers=OPENAI)
    chunks = [orjson.loads(d) for d in sse_data(r.text)[:-1]]
    args = "".join(
        tc["function"].get("arguments", "")
        for c in chunks
        for tc in c["choices"][0]["delta"].get("tool_calls") or []
    )
    assert orjson.loads(args) == {"location": "Oslo"}
    forced = chat("hello", tools=[WEATHER_TOOL], tool_choice="required")
    r = await client.post("/v1/chat/completions", json=forced, headers=OPENAI)
    assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    after = {
        "model": "gpt-4o-mini",
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "12 C"},
        ],
    }
    r = await client.post("/v1/chat/completions", json=after, headers=OPENAI)
    assert r.json()["choices"][0]["finish_reason"] == "stop"


async def test_openai_response_format(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions", json=chat("hi", response_format={"type": "json_object"}), headers=OPENAI
    )
    assert isinstance(orjson.loads(r.json()["choices"][0]["message"]["content"]), dict)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema, "strict": True}}
    r = await client.post("/v1/chat/completions", json=chat("hi", response_format=fmt), headers=OPENAI)
    value = orjson.loads(r.json()["choices"][0]["message"]["content"])
    assert isinstance(value["city"], str)
    assert isinstance(value["population"], int)


async def test_deepseek_reasoner_reasoning_content(client: httpx.AsyncClient) -> None:
    body = {**chat("why?"), "model": "deepseek-reasoner"}
    r = await client.post("/v1/chat/completions", json=body, headers=OPENAI)
    message = r.json()["choices"][0]["message"]
    assert message["reasoning_content"]
    assert message["content"]
    assert r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    r = await client.post("/v1/chat/completions", json={**body, "stream": True}, headers=OPENAI)
    deltas = [orjson.loads(d)["choices"][0]["delta"] for d in sse_data(r.text)[:-1]]
    assert any(d.get("reasoning_content") for d in deltas)


async def test_openai_embeddings_float_and_base64(client: httpx.AsyncClient) -> None:
    body = {"model": "text-embedding-3-small", "input": ["a", "b"]}
    r = await client.post("/v1/embeddings", json=body, headers=OPENAI)
    floats = [d["embedding"] for d in r.json()["data"]]
    assert len(floats) == 2
    assert len(floats[0]) == 1536
    r = await client.post("/v1/embeddings", json={**body, "encoding_format": "base64"}, headers=OPENAI)
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats[0], abs=1e-6)
    r = await client.post("/v1/embeddings", json={**body, "dimensions": 8}, headers=OPENAI)
    assert len(r.json()["data"][0]["embedding"]) == 8


async def test_openai_models_and_errors(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models", headers=OPENAI)
    assert {m["id"] for m in r.json()["data"]} >= {"gpt-4o-mini", "text-embedding-3-small"}
    r = await client.post("/v1/chat/completions", json=chat("hi"))
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = await client.post("/v1/chat/completions", content=b"{nope", headers=OPENAI)
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = await client.post("/v1/chat/completions", json=chat("hi"), headers={**OPENAI, "x-sim-fail": "429"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    r = await client.post("/v1/chat/completions", json=chat("hi"), headers={**OPENAI, "x-sim-fail": "404"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


async def test_failure_rules_every_and_first(client: httpx.AsyncClient) -> None:
    codes = []
    for _ in range(6):
        r = await client.post(
            "/v1/chat/completions", json={**chat("x"), "model": "every-third"}, headers=OPENAI
        )
        codes.append(r.status_code)
    assert codes == [200, 200, 429, 200, 200, 429]
    assert r.headers["retry-after"] == "7"
    codes = []
    for _ in range(3):
        r = await client.post(
            "/v1/chat/completions", json={**chat("x"), "model": "first-two"}, headers=OPENAI
        )
        codes.append(r.status_code)
    assert codes == [500, 500, 200]
    stats = (await client.get("/_sim/stats")).json()
    assert stats["injected"] == {"rate_limit": 2, "server_error": 2}


async def test_malformed_json_is_malformed(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions", json=chat("hi"), headers={**OPENAI, "x-sim-fail": "malformed"}
    )
    assert r.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)
    body = chat("hi", stream=True)
    r = await client.post("/v1/chat/completions", json=body, headers={**OPENAI, "x-sim-fail": "malformed"})
    data = sse_data(r.text)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(data[1])


# --- Anthropic ------------------------------------------------------------------------------


def message(content: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-x",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


async def test_anthropic_message_and_headers(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/messages", json=message("capital of France?", system="Be brief."), headers=ANTHROPIC
    )
    body = r.json()
    assert body["type"] == "message"
    assert body["content"] == [{"type": "text", "text": "Paris."}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] > 0
    r = await client.post("/v1/messages", json=message("hi"), headers={"x-api-key": "k"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = await client.post("/v1/messages", json=message("hi"), headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 401
    assert r.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }


async def test_anthropic_stream_event_sequence(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/messages", json=message("Explain queues", stream=True), headers=ANTHROPIC)
    events = sse_events(r.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert all(e["delta"]["type"] == "text_delta" for n, e in events if n == "content_block_delta")
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] > 0


async def test_anthropic_tool_use(client: httpx.AsyncClient) -> None:
    tools = [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
        }
    ]
    r = await client.post("/v1/messages", json=message("weather?", tools=tools), headers=ANTHROPIC)
    block = r.json()["content"][-1]
    assert r.json()["stop_reason"] == "tool_use"
    assert block["type"] == "tool_use"
    assert block["input"] == {"location": "Oslo"}
    assert block["id"].startswith("toolu_")
    r = await client.post(
        "/v1/messages", json=message("weather?", tools=tools, stream=True), headers=ANTHROPIC
    )
    events = sse_events(r.text)
    partial = "".join(
        e["delta"]["partial_json"]
        for n, e in events
        if n == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    )
    assert orjson.loads(partial) == {"location": "Oslo"}


async def test_anthropic_overloaded_529(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/messages", json=message("hi"), headers={**ANTHROPIC, "x-sim-fail": "529"})
    assert r.status_code == 529
    assert r.json()["error"]["type"] == "overloaded_error"


# --- Gemini ---------------------------------------------------------------------------------

GEN = {"contents": [{"role": "user", "parts": [{"text": "Explain queues"}]}]}


async def test_gemini_generate_and_stream(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1beta/models/gemini-2.0-flash:generateContent", json=GEN, headers=GEMINI)
    body = r.json()
    text = body["candidates"][0]["content"]["parts"][0]["text"]
    assert body["candidates"][0]["finishReason"] == "STOP"
    assert body["usageMetadata"]["totalTokenCount"] > 0
    r = await client.post("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=test", json=GEN)
    chunks = [orjson.loads(d) for d in sse_data(r.text)]
    streamed = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert streamed == text
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    r = await client.post("/v1beta/models/gemini-2.0-flash:streamGenerateContent", json=GEN, headers=GEMINI)
    array = orjson.loads(r.content)
    assert "".join(p.get("text", "") for c in array for p in c["candidates"][0]["content"]["parts"]) == text


async def test_gemini_tools_json_and_embeddings(client: httpx.AsyncClient) -> None:
    tools = [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "parameters": {"type": "OBJECT", "properties": {"location": {"type": "STRING"}}},
                }
            ]
        }
    ]
    body = {"contents": [{"role": "user", "parts": [{"text": "weather?"}]}], "tools": tools}
    r = await client.post("/v1beta/models/gemini-2.0-flash:generateContent", json=body, headers=GEMINI)
    assert r.json()["candidates"][0]["content"]["parts"][0]["functionCall"] == {
        "name": "get_weather",
        "args": {"location": "Oslo"},
    }
    config = {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}},
    }
    r = await client.post(
        "/v1beta/models/g:generateContent", json={**GEN, "generationConfig": config}, headers=GEMINI
    )
    assert isinstance(orjson.loads(r.json()["candidates"][0]["content"]["parts"][0]["text"])["n"], int)
    one = {"content": {"parts": [{"text": "hello"}]}}
    r = await client.post("/v1beta/models/text-embedding-004:embedContent", json=one, headers=GEMINI)
    assert len(r.json()["embedding"]["values"]) == 384
    batch = {"requests": [{**one, "model": "models/text-embedding-004", "outputDimensionality": 16}] * 2}
    r = await client.post("/v1beta/models/text-embedding-004:batchEmbedContents", json=batch, headers=GEMINI)
    assert [len(e["values"]) for e in r.json()["embeddings"]] == [16, 16]


async def test_gemini_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1beta/models/g:generateContent", json=GEN)
    assert r.status_code == 403
    assert r.json()["error"]["status"] == "PERMISSION_DENIED"
    r = await client.post(
        "/v1beta/models/g:generateContent", json=GEN, headers={**GEMINI, "x-sim-fail": "429"}
    )
    error = r.json()["error"]
    assert r.status_code == 429
    assert error["code"] == 429
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["retryDelay"] == "1s"
    r = await client.post("/v1beta/models/g:generateContent", json={}, headers=GEMINI)
    assert r.status_code == 400
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT"


async def test_model_lists_and_token_counts_per_protocol(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models", headers=ANTHROPIC)
    assert r.json()["data"][0]["type"] == "model"
    assert r.json()["has_more"] is False
    r = await client.get("/v1beta/models", headers=GEMINI)
    assert "models/gpt-4o-mini" in {m["name"] for m in r.json()["models"]}
    r = await client.post("/v1/messages/count_tokens", json=message("hello there"), headers=ANTHROPIC)
    assert r.json()["input_tokens"] > 0
    r = await client.post("/v1beta/models/g:countTokens", json=GEN, headers=GEMINI)
    assert r.json()["totalTokens"] > 0
    r = await client.get("/v1/models/gpt-4o-mini", headers=OPENAI)
    assert r.json()["id"] == "gpt-4o-mini"
    r = await client.get("/v1/models/nope", headers=OPENAI)
    assert r.status_code == 404
    r = await client.post("/v1/unknown", headers=OPENAI)
    assert r.status_code == 404
    assert r.headers["x-nexus-simulated"] == "true"


async def test_strict_models_and_api_keys() -> None:
    scenario = parse_scenario("strict_models: true\nauth: {keys: [good]}\nmodels: {known: {}}")
    transport = httpx.ASGITransport(app=create_app(scenario))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as c:
        body = {"model": "unknown", "messages": [{"role": "user", "content": "hi"}]}
        r = await c.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer good"})
        assert r.status_code == 404
        r = await c.post("/v1/chat/completions", json={**body, "model": "known"}, headers=OPENAI)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = await c.post(
            "/v1/chat/completions", json={**body, "model": "known"}, headers={"Authorization": "Bearer good"}
        )
        assert r.status_code == 200
