"""The official ``openai`` and ``anthropic`` SDKs against the simulator over a real socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
import uvicorn

from core.simulator import create_app, parse_scenario

SCENARIO = """
models:
  gpt-4o-mini: {}
  text-embedding-3-small: {embedding_dim: 384}
  slow-model: {latency: {ttft_ms: 150, tokens_per_s: 200}}
  stall-model: {failures: [{kind: timeout, every: 1, stream_only: true, after_tokens: 2}]}
rules:
  - {match: "(?i)weather", tool: get_weather, arguments: {location: Oslo}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        create_app(parse_scenario(SCENARIO)),
        host="127.0.0.1",
        port=port,
        http="httptools",
        loop="asyncio",
        access_log=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "simulator did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def oai(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="sk-sim", max_retries=0)


@pytest.fixture
def claude(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key="sk-ant-sim", max_retries=0)


def test_openai_sdk_chat_stream_tools(oai: openai.OpenAI) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "Explain queues"}
    ]
    plain = oai.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert plain.system_fingerprint == "nexus-sim"
    assert plain.usage is not None
    text = plain.choices[0].message.content
    assert text

    stream = oai.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == text
    assert usage is not None
    assert usage.completion_tokens == plain.usage.completion_tokens

    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
    called = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[tool],  # type: ignore[list-item]
    )
    call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert call.function.arguments == '{"location":"Oslo"}'  # type: ignore[union-attr]


def test_openai_sdk_embeddings_and_models(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"]
    )  # base64 on the wire
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float"
    )
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 384
    assert result.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert {m.id for m in oai.models.list()} >= {"gpt-4o-mini", "text-embedding-3-small"}


def test_openai_sdk_error_classes(oai: openai.OpenAI) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.RateLimitError) as rate:
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=messages, extra_headers={"x-sim-fail": "429"}
        )
    assert rate.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=messages, extra_headers={"x-sim-fail": "500"}
        )
    with pytest.raises(openai.AuthenticationError):
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=messages, extra_headers={"x-sim-fail": "401"}
        )
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=messages, extra_headers={"x-sim-fail": "404"}
        )


def test_anthropic_sdk_messages_stream_and_overloaded(claude: anthropic.Anthropic) -> None:
    msgs: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Explain queues"}]
    plain = claude.messages.create(model="claude-sonnet", max_tokens=200, messages=msgs)
    assert plain.content[0].type == "text"
    assert plain.usage.output_tokens > 0
    with claude.messages.stream(model="claude-sonnet", max_tokens=200, messages=msgs) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == plain.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        claude.messages.create(
            model="claude-sonnet", max_tokens=10, messages=msgs, extra_headers={"x-sim-fail": "529"}
        )
    assert overloaded.value.status_code == 529
    assert isinstance(overloaded.value, getattr(anthropic, "OverloadedError", anthropic.APIStatusError))


def _stream_bytes(base_url: str, fail: str) -> tuple[bytes, Exception | None]:
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "Explain queues"}],
    }
    headers = {"Authorization": "Bearer sk", "x-sim-fail": fail}
    received = b""
    try:
        with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received += chunk
    except httpx.RemoteProtocolError as exc:
        return received, exc
    return received, None


def test_cut_streams_end_without_done(base_url: str, oai: openai.OpenAI) -> None:
    received, error = _stream_bytes(base_url, "cut")
    assert error is not None
    assert b"data: [DONE]" not in received
    assert received.count(b'"content":') >= 3  # the role chunk plus tokens before the cut
    received, error = _stream_bytes(base_url, "cut-before-first")
    assert error is not None
    assert received == b""
    stream = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-sim-fail": "cut"},
    )
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        for _ in stream:
            pass


def test_timeout_hangs_until_client_gives_up(base_url: str) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            base_url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer sk", "x-sim-fail": "timeout"},
            timeout=0.3,
        )
    assert time.monotonic() - started >= 0.3


def test_latency_time_to_first_token_and_rate(base_url: str) -> None:
    body = {
        "model": "slow-model",
        "stream": True,
        "messages": [{"role": "user", "content": "Explain queues"}],
    }
    started = time.monotonic()
    first: float | None = None
    tokens = 0
    with httpx.stream(
        "POST", base_url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk"}
    ) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                tokens += 1
                first = first if first is not None else time.monotonic() - started
    total = time.monotonic() - started
    assert first is not None
    assert 0.14 <= first < 0.5
    assert total >= 0.15 + (tokens - 1) / 200 * 0.9


def test_timeout_after_tokens_stalls_mid_stream(base_url: str) -> None:
    body = {"model": "stall-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    received = bytearray()

    def read() -> None:
        with httpx.stream(
            "POST",
            base_url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer sk"},
            timeout=httpx.Timeout(5.0, read=0.3),
        ) as response:
            for chunk in response.iter_raw():
                received.extend(chunk)

    with pytest.raises(httpx.ReadTimeout):
        read()
    assert received.count(b"data: ") == 3  # the role chunk and two tokens, then silence
