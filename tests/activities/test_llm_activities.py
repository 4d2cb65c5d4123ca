"""``call_llm`` bills once per call_key; the payload store is tenant-scoped and deduplicating."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.llm import LlmActivities
from core.config import Settings
from core.errors import NotFound, PayloadTooLarge
from core.orchestration.steps import CallLlmInput
from core.payloads import PayloadStore
from core.providers import Message
from tests.workflows.orchestration_support import FAILING, MINI, model_calls
from workers.main import make_registry


@pytest_asyncio.fixture
async def llm(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[LlmActivities]:
    redis = Redis.from_url(settings.redis.url)
    async with httpx.AsyncClient(trust_env=False) as http:
        registry = make_registry(settings, http)
        yield LlmActivities(registry, registry.catalog, sessions, redis)
    await redis.aclose()


def env_for(workflow_id: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
    return env


async def sim_requests(settings: Settings, upstream: str) -> int:
    async with httpx.AsyncClient(trust_env=False) as http:
        stats = (await http.get(f"{settings.providers.simulator_url}/_sim/stats")).json()
    return int(stats.get("requests", {}).get(upstream, 0))


async def test_a_repeated_call_returns_the_stored_answer_without_calling_the_model(
    llm: LlmActivities, settings: Settings, sessions: async_sessionmaker[AsyncSession], tenant_id: str
) -> None:
    wid = f"nexus:{tenant_id}:{uuid.uuid4().hex[:8]}"
    inp = CallLlmInput(
        tenant_id=tenant_id,
        workflow_id=wid,
        call_key=f"{wid}:s1:{MINI}",
        model=MINI,
        messages=[Message(role="user", content="What is the capital of France?")],
        max_tokens=64,
    )
    env = env_for(wid)
    before = await sim_requests(settings, "gpt-4o-mini")
    first = await env.run(llm.call_llm, inp)
    after_first = await sim_requests(settings, "gpt-4o-mini")
    second = await env.run(llm.call_llm, inp)
    assert after_first == before + 1
    assert await sim_requests(settings, "gpt-4o-mini") == after_first  # not called again
    assert not first.replayed
    assert second.replayed
    assert second.answer == first.answer
    assert second.cost_usd == first.cost_usd > 0
    assert "Paris" in first.answer.preview
    assert len(await model_calls(sessions, wid)) == 1


async def test_provider_errors_become_typed_application_errors(llm: LlmActivities, tenant_id: str) -> None:
    wid = f"nexus:{tenant_id}:{uuid.uuid4().hex[:8]}"
    inp = CallLlmInput(
        tenant_id=tenant_id,
        workflow_id=wid,
        call_key=f"{wid}:s1:{FAILING}",
        model=FAILING,
        messages=[Message(role="user", content="hi")],
    )
    with pytest.raises(ApplicationError) as info:
        await env_for(wid).run(llm.call_llm, inp)
    assert info.value.type == "server"
    assert not info.value.non_retryable
    unknown = inp.model_copy(update={"model": "sim-openai/nope", "call_key": f"{wid}:x"})
    with pytest.raises(ApplicationError) as bad:
        await env_for(wid).run(llm.call_llm, unknown)
    assert bad.value.type == "BadInput"
    assert bad.value.non_retryable


async def test_call_for_another_workflow_is_refused(llm: LlmActivities, tenant_id: str) -> None:
    inp = CallLlmInput(
        tenant_id="someone-else",
        workflow_id=f"nexus:{tenant_id}:x",
        call_key="k",
        model=MINI,
        messages=[Message(role="user", content="hi")],
    )
    with pytest.raises(ApplicationError, match="does not match"):
        await env_for(f"nexus:{tenant_id}:x").run(llm.call_llm, inp)


async def test_payload_store_is_tenant_scoped_deduplicated_and_bounded(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str
) -> None:
    store = PayloadStore(max_bytes=1000)
    async with sessions() as session, session.begin():
        ref = await store.put(session, tenant_id, "hello " * 10, idempotency_key="k1")
        again = await store.put(session, tenant_id, "different text", idempotency_key="k1")
        other = await store.put(session, "other-tenant", "hello " * 10, idempotency_key="k1")
    assert again == ref
    assert other.id != ref.id
    assert ref.size == 60
    assert len(ref.sha256) == 64
    async with sessions() as session:
        assert await store.get(session, tenant_id, ref) == "hello " * 10
        with pytest.raises(NotFound):
            await store.get(session, "other-tenant", ref)
        with pytest.raises(NotFound):
            await store.get(session, tenant_id, "not-a-uuid")
        with pytest.raises(PayloadTooLarge, match="exceeds the limit of 1000 bytes"):
            await store.put(session, tenant_id, "x" * 1001)
