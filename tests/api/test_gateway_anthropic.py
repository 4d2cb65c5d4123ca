"""The Anthropic-compatible ``POST /v1/messages``, driven by the official ``anthropic`` SDK.

Any catalog model answers: the upstreams here are the simulator's OpenAI, Gemini and DeepSeek
protocols (tests/fixtures/gateway_scenario.yaml), served through a real uvicorn socket.
"""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.api.test_gateway import live_url, wait_for_logs

__all__ = ["live_url"]  # the session's uvicorn server, shared with the OpenAI gateway tests

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location"],
    },
}


def sdk(live_url: str, key: str) -> anthropic.AsyncAnthropic:
    # Anthropic's base URL has no /v1; the SDK sends the key as x-api-key.
    return anthropic.AsyncAnthropic(base_url=live_url, api_key=key, max_retries=0, timeout=30)


async def test_create_on_an_openai_model(live_url, make_key, tenant_id, sessions) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    raw = await client.messages.with_raw_response.create(
        model="sim-openai/gpt-4o-mini",
        max_tokens=256,
        system="You are terse.",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    msg = await raw.parse()
    assert msg.id.startswith("msg_")
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.model == "sim-openai/gpt-4o-mini"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "The capital of France is Paris."
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0
    assert msg.usage.output_tokens > 0
    assert msg.usage.cache_read_input_tokens == 0
    assert raw.headers["x-nexus-provider"] == "sim-openai"
    assert raw.headers["x-nexus-simulated"] == "true"
    assert raw.headers["request-id"]
    logs = await wait_for_logs(sessions, tenant_id, 1)
    assert (logs[0].model, logs[0].status, logs[0].stream) == ("sim-openai/gpt-4o-mini", "ok", False)
    assert logs[0].output_tokens == msg.usage.output_tokens


async def test_create_on_a_gemini_model_with_content_blocks(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    msg = await client.messages.create(
        model="sim-gemini/gemini-2.5-flash",
        max_tokens=256,
        system=[{"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
        ],
        metadata={"user_id": "user-42"},
        # This SDK release no longer has these arguments; older clients still send them.
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 40},
    )
    assert msg.model == "sim-gemini/gemini-2.5-flash"
    assert msg.content[0].text == "The capital of France is Paris."
    assert msg.usage.output_tokens > 0


async def test_images_reach_vision_models_only(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": pixel}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Describe these images"},
    ]
    msg = await client.messages.create(
        model="sim-openai/gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": content}]
    )
    assert msg.content[0].text
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.create(
            model="sim-deepseek/deepseek-reasoner",
            max_tokens=64,
            messages=[{"role": "user", "content": content}],
        )
    assert "vision" in refused.value.api_message


async def test_max_tokens_gives_max_tokens_stop_reason(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    msg = await client.messages.create(
        model="sim-openai/gpt-4o-mini",
        max_tokens=2,
        messages=[{"role": "user", "content": "Tell me a long story about the sea"}],
    )
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens <= 2


async def test_streaming_collects_text_and_final_usage(live_url, make_key, tenant_id, sessions) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    async with client.messages.stream(
        model="sim-openai/gpt-4o",
        max_tokens=256,
        messages=[{"role": "user", "content": "Tell me about the capital of France"}],
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "The capital of France is Paris."
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.model == "sim-openai/gpt-4o"
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0
    logs = await wait_for_logs(sessions, tenant_id, 1)
    assert logs[0].stream is True
    assert logs[0].status == "ok"
    assert logs[0].output_tokens == final.usage.output_tokens


async def test_stream_event_sequence(live_url, make_key, tenant_id) -> None:
    key = await make_key(tenant_id, "developer")
    body = {
        "model": "sim-openai/gpt-4o-mini",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    names: list[str] = []
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
        async with http.stream("POST", "/v1/messages", json=body, headers={"x-api-key": key}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    names.append(line.removeprefix("event: "))
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_tools_give_tool_use_and_accept_tool_results(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    question = {"role": "user", "content": "What's the weather in Paris?"}
    msg = await client.messages.create(
        model="sim-openai/gpt-4o-mini", max_tokens=256, messages=[question], tools=[WEATHER_TOOL]
    )
    assert msg.stop_reason == "tool_use"
    call = next(b for b in msg.content if b.type == "tool_use")
    assert call.name == "get_weather"
    assert call.input == {"location": "Paris", "unit": "celsius"}
    # The usual tool loop: replay the assistant turn as received, then answer the call.
    answer = await client.messages.create(
        model="sim-openai/gpt-4o-mini",
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[
            question,
            {"role": "assistant", "content": msg.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"}],
            },
        ],
    )
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].text.startswith("Based on the tool result")


async def test_streamed_tool_use_on_gemini(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    async with client.messages.stream(
        model="sim-gemini/gemini-2.5-flash",
        max_tokens=256,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.name == "get_weather"
    assert call.input["location"] == "Paris"


async def test_thinking_blocks_from_a_reasoning_model(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    async with client.messages.stream(
        model="sim-deepseek/deepseek-reasoner",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    ) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking
    assert final.content[1].text == "The capital of France is Paris."
    plain = await client.messages.create(
        model="sim-deepseek/deepseek-reasoner",
        max_tokens=2048,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert [b.type for b in plain.content] == ["text"]  # no thinking unless asked for


async def test_bearer_token_is_accepted_too(live_url, make_key, tenant_id) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=live_url, auth_token=await make_key(tenant_id, "developer"), max_retries=0
    )
    msg = await client.messages.create(
        model="sim-openai/gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text


async def test_sdk_error_classes(live_url, make_key, tenant_id) -> None:
    hello = [{"role": "user", "content": "hi"}]
    bad_key = "nx_000000000000_nope"
    with pytest.raises(anthropic.AuthenticationError) as denied:
        await sdk(live_url, bad_key).messages.create(
            model="sim-openai/gpt-4o-mini", max_tokens=8, messages=hello
        )
    assert denied.value.type == "authentication_error"
    assert denied.value.body["type"] == "error"
    assert bad_key not in denied.value.response.text
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="no-such-model", max_tokens=8, messages=hello)
    assert missing.value.type == "not_found_error"
    assert "no-such-model" in missing.value.api_message
    with pytest.raises(anthropic.BadRequestError) as invalid:
        await client.messages.create(
            model="sim-openai/gpt-4o-mini",
            max_tokens=anthropic.NOT_GIVEN,  # type: ignore[arg-type]
            messages=hello,
        )
    assert invalid.value.type == "invalid_request_error"
    assert "max_tokens" in invalid.value.api_message
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(
            model="sim-openai/gpt-4o-mini", max_tokens=8, messages=hello, extra_body={"surprise": True}
        )
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model="sim-openai/always-429", max_tokens=8, messages=hello)
    assert limited.value.type == "rate_limit_error"
    assert limited.value.response.headers["retry-after"] == "3"
    with pytest.raises(anthropic.PermissionDeniedError):
        await sdk(live_url, await make_key(tenant_id, "auditor")).messages.create(
            model="sim-openai/gpt-4o-mini", max_tokens=8, messages=hello
        )


async def test_stream_broken_after_start_ends_with_error(live_url, make_key, tenant_id, sessions) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    received = ""

    async def consume() -> None:
        nonlocal received
        async with client.messages.stream(
            model="sim-openai/cut-mid-stream",
            max_tokens=256,
            messages=[{"role": "user", "content": "tell me a story"}],
        ) as stream:
            async for piece in stream.text_stream:
                received += piece

    with pytest.raises(anthropic.APIStatusError) as info:
        await consume()
    assert received  # it had started: the error came after real tokens, never a silent end
    assert info.value.type == "api_error"
    assert "upstream" in (info.value.api_message or "")
    logs = await wait_for_logs(sessions, tenant_id, 1)
    assert logs[0].status == "error"
    assert logs[0].error_code == "truncated_stream"


async def test_error_envelope_is_anthropic_shaped(live_url, make_key, tenant_id) -> None:
    key = await make_key(tenant_id, "developer")
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
        broken = await http.post(
            "/v1/messages",
            content=b"{not json",
            headers={"x-api-key": key, "content-type": "application/json"},
        )
        missing = await http.post("/v1/messages", json={"model": "x", "max_tokens": 1, "messages": []})
        spec = (await http.get("/openapi.json")).json()
    assert broken.status_code == 400
    body = broken.json()
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["request_id"] == broken.headers["request-id"]
    assert missing.status_code == 401  # authentication is checked before the body
    assert missing.json()["error"]["type"] == "authentication_error"
    assert "/v1/messages" in spec["paths"]
