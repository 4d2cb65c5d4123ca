"""Each adapter end to end against the provider simulator (real HTTP over a local port).

Skipped until ``core.simulator`` exists. The simulator exposes ``create_app(scenario)`` and
``Scenario``; the ``x-sim-fail`` header forces a failure (429|500|529|timeout|malformed|cut|
cut-before-first).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

simulator: Any = pytest.importorskip("core.simulator", reason="core.simulator has not landed yet")

import uvicorn  # noqa: E402

from cli.embedded import free_port  # noqa: E402
from core.providers.catalog import Catalog  # noqa: E402
from core.providers.errors import ErrorKind, ProviderError  # noqa: E402
from core.providers.registry import ProviderRegistry  # noqa: E402
from core.providers.settings import ProvidersSettings, ProviderTimeouts  # noqa: E402
from core.providers.sse import collect_stream  # noqa: E402
from core.providers.transport import AiohttpUpstream  # noqa: E402
from core.providers.types import (  # noqa: E402
    ChatRequest,
    EmbeddingRequest,
    ErrorEvent,
    Message,
    NamedToolChoice,
    TextDelta,
    ToolDefinition,
)

CHAT_MODELS = ["sim-openai/gpt-4o-mini", "sim-anthropic/claude-sonnet-4", "sim-gemini/gemini-2.5-flash"]
TOOL = ToolDefinition(
    name="get_weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def sim_url() -> AsyncIterator[str]:
    port = free_port()
    app = simulator.create_app(simulator.Scenario())
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "simulator did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


TRANSPORT = {"kind": "httpx"}
OPENED: list[AiohttpUpstream | httpx.AsyncClient] = []


@pytest_asyncio.fixture(autouse=True, params=["httpx", "aiohttp"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Every adapter test runs over an httpx client and over the gateway's aiohttp upstream."""
    TRANSPORT["kind"] = request.param
    yield str(request.param)
    while OPENED:
        await OPENED.pop().aclose()


def registry(sim_url: str, fail: str | None = None) -> ProviderRegistry:
    settings = ProvidersSettings(simulator_url=sim_url, timeouts=ProviderTimeouts(read_s=1.0, request_s=3.0))
    headers = {"x-sim-fail": fail} if fail else {}
    client: AiohttpUpstream | httpx.AsyncClient
    if TRANSPORT["kind"] == "aiohttp":
        client = AiohttpUpstream(headers=headers)
    else:
        client = httpx.AsyncClient(headers=headers, timeout=settings.timeouts.httpx_timeout())
    OPENED.append(client)
    return ProviderRegistry(Catalog.load(settings), settings, client)


def ask(model: str, **extra: Any) -> ChatRequest:
    return ChatRequest(
        model=model, messages=[Message(role="user", content="What is the capital of France?")], **extra
    )


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_plain_and_streamed_chat(sim_url: str, model: str) -> None:
    reg = registry(sim_url)
    resp = await reg.chat(ask(model, max_tokens=64))
    assert resp.content
    assert resp.model == model
    assert resp.stop_reason in ("stop", "length")
    assert resp.usage.input_tokens > 0
    assert resp.usage.output_tokens > 0
    events = [e async for e in reg.stream(ask(model, max_tokens=64))]
    assert any(isinstance(e, TextDelta) for e in events)
    streamed = await collect_stream(reg.stream(ask(model, max_tokens=64)))
    assert streamed.content
    assert streamed.usage.output_tokens > 0
    assert streamed.ttft_ms is not None


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_forced_tool_call(sim_url: str, model: str) -> None:
    resp = await registry(sim_url).chat(
        ask(model, tools=[TOOL], tool_choice=NamedToolChoice(name="get_weather"))
    )
    assert resp.stop_reason == "tool_calls"
    assert resp.tool_calls[0].name == "get_weather"
    streamed = await collect_stream(
        registry(sim_url).stream(ask(model, tools=[TOOL], tool_choice=NamedToolChoice(name="get_weather")))
    )
    assert streamed.tool_calls
    assert streamed.tool_calls[0].name == "get_weather"


async def test_deepseek_reasoning_content(sim_url: str) -> None:
    reg = registry(sim_url)
    resp = await reg.chat(ask("sim-deepseek/deepseek-reasoner", max_tokens=64))
    assert resp.reasoning_content
    assert resp.content
    streamed = await collect_stream(reg.stream(ask("sim-deepseek/deepseek-reasoner", max_tokens=64)))
    assert streamed.reasoning_content
    assert streamed.content


async def test_embeddings(sim_url: str) -> None:
    resp = await registry(sim_url).embed(
        EmbeddingRequest(model="sim-openai/text-embedding-3-small", input=["a", "b"])
    )
    assert len(resp.embeddings) == 2
    assert len(resp.embeddings[0]) == 384


@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize(
    ("fail", "kind"),
    [
        ("429", ErrorKind.rate_limit),
        ("500", ErrorKind.server),
        ("529", ErrorKind.overloaded),
        ("timeout", ErrorKind.timeout),
        ("malformed", ErrorKind.malformed_response),
    ],
)
async def test_forced_failures_map_to_taxonomy(sim_url: str, model: str, fail: str, kind: ErrorKind) -> None:
    with pytest.raises(ProviderError) as info:
        await registry(sim_url, fail).chat(ask(model))
    assert info.value.kind is kind
    assert info.value.retryable
    if kind is ErrorKind.rate_limit:
        assert info.value.retry_after_s is not None
        assert info.value.to_application_error().next_retry_delay is not None


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_cut_streams(sim_url: str, model: str) -> None:
    events = [e async for e in registry(sim_url, "cut").stream(ask(model, max_tokens=200))]
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].kind == "truncated_stream"
    with pytest.raises(ProviderError) as info:
        async for _ in registry(sim_url, "cut-before-first").stream(ask(model)):
            pass
    assert info.value.kind is ErrorKind.truncated_stream
