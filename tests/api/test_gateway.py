"""The OpenAI-compatible gateway, driven by the official ``openai`` SDK as a real client.

The upstream is the provider simulator (real HTTP, real wire protocols) with the scenario in
tests/fixtures/gateway_scenario.yaml; the API runs on a real uvicorn socket so streaming and
client disconnects behave as in production.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import openai
import pytest
import pytest_asyncio
import uvicorn
from sqlalchemy import select

from cli.embedded import free_port
from core.db.gateway_models import InferenceLog
from tests.conftest import auth


@pytest_asyncio.fixture(scope="session")
async def live_url(app: object) -> AsyncIterator[str]:
    """The session's app served by uvicorn on a free port (lifespan already running)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")  # type: ignore[arg-type]
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def sdk(live_url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{live_url}/v1", api_key=key, max_retries=0, timeout=30)


async def wait_for_logs(sessions, tenant_id: str, count: int) -> list[InferenceLog]:
    for _ in range(100):
        async with sessions() as session:
            rows = list(
                (
                    await session.execute(select(InferenceLog).where(InferenceLog.tenant_id == tenant_id))
                ).scalars()
            )
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} inference logs, found {len(rows)}")


async def test_chat_completion_through_sdk(live_url, make_key, tenant_id, sessions) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    raw = await client.chat.completions.with_raw_response.create(
        model="sim-openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "The capital of France is Paris."
    assert resp.model == "sim-openai/gpt-4o-mini"
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.completion_tokens > 0
    assert raw.headers["x-nexus-simulated"] == "true"
    assert raw.headers["x-nexus-provider"] == "sim-openai"
    logs = await wait_for_logs(sessions, tenant_id, 1)
    assert logs[0].status == "ok"
    assert logs[0].output_tokens == resp.usage.completion_tokens
    assert logs[0].cost_usd > 0
    assert logs[0].content is None  # content logging is off unless the tenant enables it


async def test_streaming_with_usage(live_url, make_key, tenant_id, sessions) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    stream = await client.chat.completions.create(
        model="sim-anthropic/claude-sonnet-4",
        messages=[{"role": "user", "content": "Tell me about the capital of France"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "The capital of France is Paris."
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens > 0
    logs = await wait_for_logs(sessions, tenant_id, 1)
    assert logs[0].stream is True
    assert logs[0].output_tokens == usage.completion_tokens
    assert logs[0].ttft_ms is not None


async def test_tools_and_json_mode(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            },
        }
    ]
    resp = await client.chat.completions.create(
        model="sim-gemini/gemini-2.5-flash",
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=tools,
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "Paris" in call.function.arguments
    assert resp.choices[0].finish_reason == "tool_calls"
    resp = await client.chat.completions.create(
        model="sim-openai/gpt-4o",
        messages=[{"role": "user", "content": "Give me a JSON object"}],
        response_format={"type": "json_object"},
    )
    import json

    assert isinstance(json.loads(resp.choices[0].message.content), dict)


async def test_embeddings_and_models(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    emb = await client.embeddings.create(model="sim-openai/text-embedding-3-small", input=["hello", "world"])
    assert len(emb.data) == 2
    assert len(emb.data[0].embedding) == 384
    models = {m.id for m in (await client.models.list()).data}
    assert "sim-openai/gpt-4o-mini" in models
    assert "default-chat" in models


async def test_scoped_key_sees_and_uses_only_its_models(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer", scopes=["models:sim-openai/gpt-4o*"]))
    models = {m.id for m in (await client.models.list()).data}
    assert models == {"sim-openai/gpt-4o-mini", "sim-openai/gpt-4o"}
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="sim-anthropic/claude-sonnet-4", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="default-chat", messages=[{"role": "user", "content": "hi"}]
        )
    ok = await client.chat.completions.create(
        model="sim-openai/gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert ok.choices[0].message.content


async def test_sdk_error_classes(live_url, make_key, tenant_id) -> None:
    with pytest.raises(openai.AuthenticationError):
        await sdk(live_url, "nx_000000000000_nope").models.list()
    client = sdk(live_url, await make_key(tenant_id, "developer", rate_limit_per_minute=2))
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert "no-such-model" in str(missing.value)
    for text in ("x", "x2"):  # the limit is 2 per minute; the 404 above was never admitted
        await client.chat.completions.create(
            model="sim-openai/gpt-4o-mini", messages=[{"role": "user", "content": text}]
        )
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(
            model="sim-openai/gpt-4o-mini", messages=[{"role": "user", "content": "y"}]
        )
    assert int(limited.value.response.headers["retry-after"]) >= 1
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="sim-openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"surprise": True},
        )


async def test_fallback_on_retryable_error(live_url, make_key, tenant_id, sessions) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    raw = await client.chat.completions.with_raw_response.create(
        model="test-fallback", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    assert raw.headers["x-nexus-model"] == "sim-anthropic/claude-sonnet-4"
    assert raw.parse().choices[0].message.content == "The capital of France is Paris."
    logs = await wait_for_logs(sessions, tenant_id, 1)
    assert [(log.model, log.route_group, log.status) for log in logs] == [
        ("sim-anthropic/claude-sonnet-4", "test-fallback", "ok")
    ]


async def test_no_fallback_on_client_error(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="test-no-fallback-on-400", messages=[{"role": "user", "content": "hi"}]
        )


async def test_direct_upstream_429_maps_to_rate_limit_with_retry_after(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(
            model="sim-openai/always-429", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.response.headers["retry-after"] == "3"


async def test_stream_falls_back_before_first_token(live_url, make_key, tenant_id) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    raw = await client.chat.completions.with_raw_response.create(
        model="test-stream-fallback",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        stream=True,
    )
    assert raw.headers["x-nexus-model"] == "sim-gemini/gemini-2.5-flash"
    text = ""
    async for chunk in raw.parse():
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert text == "The capital of France is Paris."


async def test_stream_broken_after_start_ends_with_error(live_url, make_key, tenant_id, sessions) -> None:
    client = sdk(live_url, await make_key(tenant_id, "developer"))
    stream = await client.chat.completions.create(
        model="sim-openai/cut-mid-stream",
        messages=[{"role": "user", "content": "tell me a story"}],
        stream=True,
    )
    received = ""

    async def consume() -> None:
        nonlocal received
        async for chunk in stream:
            for choice in chunk.choices:
                received += choice.delta.content or ""

    with pytest.raises(openai.APIError) as info:
        await consume()
    assert received  # it had started: the error came after real tokens, never a silent end
    assert "truncated" in str(info.value).lower() or "upstream" in str(info.value).lower()
    logs = await wait_for_logs(sessions, tenant_id, 1)
    assert logs[0].status == "error"
    assert logs[0].error_code == "truncated_stream"


async def test_client_disconnect_cancels_upstream(live_url, make_key, tenant_id, sessions) -> None:
    key = await make_key(tenant_id, "developer")
    body = {
        "model": "sim-openai/slow-stream",
        "messages": [{"role": "user", "content": "long"}],
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body, headers=auth(key)) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if '"content"' in line and '"content":""' not in line:
                    break  # got a first token: hang up
    logs = await wait_for_logs(sessions, tenant_id, 1)
    assert logs[0].error_code == "client_disconnected"
    # 200 words at 20 tokens/s would take ~10 s; the call ended as soon as we left.
    assert logs[0].latency_ms < 5000


async def test_budget_exhausted_is_402_and_never_overspent(
    client, live_url, make_key, tenant_id, sessions, settings
) -> None:
    from redis.asyncio import Redis

    from core.gateway.budget_store import set_budget
    from core.gateway.budgets import BudgetScope

    key = await make_key(tenant_id, "developer")
    redis = Redis.from_url(settings.redis.url)
    async with sessions() as session, session.begin():
        await set_budget(session, redis, BudgetScope.for_tenant(tenant_id), Decimal("0.0005"))
    await redis.aclose()
    c = sdk(live_url, key)

    async def one() -> str:
        try:
            await c.chat.completions.create(
                model="sim-openai/gpt-4o",
                messages=[{"role": "user", "content": f"hello {uuid.uuid4()}"}],
                max_tokens=20,
            )
            return "ok"
        except openai.APIStatusError as exc:
            return str(exc.status_code)

    results = await asyncio.gather(*(one() for _ in range(50)))
    assert "402" in results
    assert "ok" in results
    await asyncio.sleep(0.3)
    logs = await wait_for_logs(sessions, tenant_id, results.count("ok"))
    spent = sum(log.cost_usd for log in logs)
    assert spent <= Decimal("0.0005")


async def test_response_cache_is_opt_in_and_per_tenant(live_url, make_key, tenant_id) -> None:
    body = dict(
        model="sim-openai/gpt-4o-mini",
        messages=[{"role": "user", "content": f"cache me {uuid.uuid4()}"}],
        temperature=0,
    )
    c = sdk(live_url, await make_key(tenant_id, "developer"))
    first = await c.chat.completions.with_raw_response.create(**body, extra_headers={"X-Nexus-Cache": "use"})
    second = await c.chat.completions.with_raw_response.create(**body, extra_headers={"X-Nexus-Cache": "use"})
    assert first.headers["x-nexus-cache"] == "miss"
    assert second.headers["x-nexus-cache"] == "hit"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    other = sdk(live_url, await make_key(f"o-{tenant_id}", "developer"))
    theirs = await other.chat.completions.with_raw_response.create(
        **body, extra_headers={"X-Nexus-Cache": "use"}
    )
    assert theirs.headers["x-nexus-cache"] == "miss"
    plain = await c.chat.completions.with_raw_response.create(**body)
    assert "x-nexus-cache" not in plain.headers  # the cache was not asked for


async def test_auditor_cannot_call_models(live_url, make_key, tenant_id) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        await sdk(live_url, await make_key(tenant_id, "auditor")).chat.completions.create(
            model="sim-openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )


async def test_a_busy_key_shares_admission_leases_and_settles_to_the_logged_cost(
    app, live_url, make_key, tenant_id, sessions, settings
) -> None:
    """Sequential calls of one key, fast enough for leases: every call logged, spend exact."""
    from redis.asyncio import Redis

    from core.gateway.budgets import BudgetScope, budget_status

    # The session's app is wrapped by asgi-lifespan's state middleware; the FastAPI app is inside.
    fastapi_app = next(c.cell_contents for c in app.__closure__ if hasattr(c.cell_contents, "state"))
    leases = fastapi_app.state.nexus.gateway.leases
    assert leases is not None
    before = leases.local
    c = sdk(live_url, await make_key(tenant_id, "developer", rate_limit_per_minute=100_000))
    loop = asyncio.get_running_loop()
    deadline, sent = loop.time() + 20, 0
    while leases.local - before < 20 and loop.time() < deadline:
        await c.chat.completions.create(
            model="sim-openai/gpt-4o-mini", messages=[{"role": "user", "content": f"hi {sent}"}], max_tokens=8
        )
        sent += 1
    assert leases.local - before >= 20  # calls admitted from a lease, with no Redis round trip
    logs = await wait_for_logs(sessions, tenant_id, sent)
    assert len(logs) == sent
    redis = Redis.from_url(settings.redis.url)
    try:
        for _ in range(100):  # the last lease ends after 0.25 s, then settles with the next batch
            status = await budget_status(redis, BudgetScope.for_tenant(tenant_id))
            if status.reserved_usd == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    assert status.reserved_usd == 0
    logged = sum(log.cost_usd for log in logs)
    assert logged > 0
    # A lease settles its calls' total once (rounded up to a micro-dollar once, not per call).
    assert abs(status.spent_usd - logged) <= Decimal("0.000001") * sent


async def test_a_stream_left_while_its_first_frame_is_sent_is_still_settled_and_logged(
    app, make_key, tenant_id, sessions
) -> None:
    """The client goes away while the first SSE frame is being written (a stalled socket).

    Starlette then stops the response without resuming the body generator, so the relay never
    runs; the call must be logged and settled all the same.
    """
    import orjson

    key = await make_key(tenant_id, "developer")
    body = orjson.dumps(
        {"model": "sim-openai/gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    request_id = f"stalled-{uuid.uuid4().hex[:8]}"
    first_frame = asyncio.Event()
    sent: list[dict] = []
    received = 0

    async def receive() -> dict:
        nonlocal received
        received += 1
        if received == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await first_frame.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_frame.set()
            await asyncio.Event().wait()  # the socket never drains

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"x-request-id", request_id.encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 30)
    assert sent[0]["status"] == 200
    logs = await wait_for_logs(sessions, tenant_id, 1)
    assert [(log.request_id, log.status, log.error_code) for log in logs] == [
        (request_id, "error", "client_disconnected")
    ]
    assert logs[0].input_tokens > 0  # the upstream answered: the prompt is billed
