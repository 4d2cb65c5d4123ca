"""The exact-match response cache against real Valkey: tenant isolation, key rules, TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio import Redis

from core.gateway import cache
from core.providers.types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, Usage


@pytest_asyncio.fixture
async def redis(redis_port: int) -> AsyncIterator[Redis]:
    client = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    yield client
    await client.aclose()


def chat(**fields: object) -> ChatRequest:
    base: dict[str, object] = {
        "model": "sim-openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "temperature": 0,
    }
    return ChatRequest.model_validate(base | fields)


ANSWER = ChatResponse(
    id="chatcmpl-1",
    model="sim-openai/gpt-4o-mini",
    provider="sim",
    content="4",
    usage=Usage(input_tokens=9, output_tokens=1),
)


async def test_tenants_never_share_entries(redis: Redis, tenant_id: str) -> None:
    other = tenant_id + "-other"
    key_a, key_b = cache.cache_key(tenant_id, chat()), cache.cache_key(other, chat())
    assert key_a != key_b
    assert tenant_id in key_a
    assert await cache.put(redis, key_a, ANSWER, ttl_s=60)
    assert await cache.get_chat(redis, key_a) == ANSWER
    assert await cache.get_chat(redis, key_b) is None
    assert await cache.purge_tenant(redis, tenant_id) == 1
    assert await cache.get(redis, key_a) is None


def test_key_covers_what_shapes_the_answer_only(tenant_id: str) -> None:
    key = cache.cache_key(tenant_id, chat())
    assert cache.cache_key(tenant_id, chat(user="alice", metadata={"trace": "x"})) == key
    assert cache.cache_key(tenant_id, chat(seed=7)) != key
    assert cache.cache_key(tenant_id, chat(max_tokens=5)) != key
    assert cache.cache_key(tenant_id, chat(temperature=0.5)) != key
    assert cache.cache_key(tenant_id, chat(model="sim-anthropic/claude")) != key
    assert cache.cache_key(tenant_id, chat(response_format={"type": "json_object"})) != key
    assert cache.cache_key(tenant_id, chat(tools=[{"name": "f"}])) != key
    # The normalised request as a mapping, in any key order, gives the same key.
    dumped = chat().model_dump(mode="json", exclude_none=True)
    assert cache.cache_key(tenant_id, dict(reversed(list(dumped.items())))) == key
    embed = EmbeddingRequest(model="sim-openai/emb", input=["hi"])
    assert cache.cache_key(tenant_id, embed, "embeddings") != cache.cache_key(tenant_id, embed, "chat")


def test_only_deterministic_requests_are_cached_unless_forced() -> None:
    assert cache.cacheable(chat(), enabled=True)
    assert not cache.cacheable(chat(), enabled=False)
    assert not cache.cacheable(chat(temperature=0.7), enabled=True)
    assert not cache.cacheable(chat(temperature=None), enabled=True)
    assert cache.cacheable(chat(temperature=0.7), enabled=True, force=True)
    assert cache.cacheable(EmbeddingRequest(model="m", input=["x"]), enabled=True)


async def test_ttl_and_refused_answers(redis: Redis, tenant_id: str) -> None:
    key = cache.cache_key(tenant_id, chat(seed=1))
    assert await cache.put(redis, key, ANSWER, ttl_s=1)
    assert 0 < await redis.pttl(key) <= 1000
    await asyncio.sleep(1.1)
    assert await cache.get(redis, key) is None
    filtered = ANSWER.model_copy(update={"stop_reason": "content_filter"})
    assert not await cache.put(redis, key, filtered, ttl_s=60)
    assert not await cache.put(redis, key, ANSWER, ttl_s=0)
    assert await cache.get(redis, key) is None
    vectors = EmbeddingResponse(model="m", provider="sim", embeddings=[[0.5, 0.25]])
    embed_key = cache.cache_key(tenant_id, EmbeddingRequest(model="m", input=["x"]), "embeddings")
    assert await cache.put(redis, embed_key, vectors, ttl_s=60)
    assert await cache.get_embeddings(redis, embed_key) == vectors
    await redis.set(key, b"not json")
    assert await cache.get_chat(redis, key) is None
