"""Opt-in exact-match response cache in Redis.

The key is the SHA-256 of the canonical JSON (sorted keys, no whitespace) of the tenant, the
kind of call and every request field that shapes the answer: model, messages, tools,
tool_choice, response_format, temperature, top_p, max_tokens, stop, seed, dimensions…
Fields that do not change the answer are left out: ``user`` and ``metadata`` (and streaming,
which is not a request field: a cached answer may be replayed as a stream). The tenant is part
of the hashed input *and* of the Redis key name, so tenants never share entries and one
tenant's entries can be purged alone.

Rules (:func:`cacheable`): only when the caller opted in; a request with ``temperature > 0``
(or left unset, which providers treat as 1) is sampled, so it is skipped unless the caller
forces caching. Only complete answers are stored: :func:`put` refuses answers stopped by a
content filter; errors and streams that failed never reach it (the gateway stores a streamed
answer only after its ``done`` event).

Authorisation (model scopes, rate limits) happens before a lookup: a cache hit must not let a
key read an answer for a model it may not use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel
from redis.asyncio import Redis

from core.gateway.metrics import CACHE_LOOKUPS
from core.providers.types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse

DEFAULT_TTL_S = 3600
_IGNORED = frozenset({"user", "metadata", "stream", "stream_options"})

CallKind = Literal["chat", "embeddings"]


def _fields(request: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(request, BaseModel):
        data: dict[str, Any] = request.model_dump(mode="json", exclude_none=True)
    else:
        data = {k: v for k, v in request.items() if v is not None}
    return {k: v for k, v in data.items() if k not in _IGNORED}


def cache_key(tenant_id: str, request: BaseModel | Mapping[str, Any], kind: CallKind = "chat") -> str:
    """The Redis key of a request's cached answer, scoped to ``tenant_id``."""
    canonical = orjson.dumps(
        {"tenant": tenant_id, "kind": kind, "request": _fields(request)},
        option=orjson.OPT_SORT_KEYS,
    )
    return f"nexus:cache:{{{tenant_id}}}:{kind}:{hashlib.sha256(canonical).hexdigest()}"


def cacheable(request: ChatRequest | EmbeddingRequest, *, enabled: bool, force: bool = False) -> bool:
    """Whether to look up / store this request: opted in, and deterministic or forced.

    Embeddings are deterministic. A chat request qualifies when ``temperature == 0``; with
    ``temperature > 0`` or unset only when ``force`` is set (the caller accepts one sampled
    answer being replayed).
    """
    if not enabled:
        return False
    if isinstance(request, EmbeddingRequest) or force:
        return True
    return request.temperature is not None and request.temperature == 0


async def get(redis: Redis, key: str) -> bytes | None:
    """The stored normalised answer (orjson bytes), or None."""
    raw = await redis.get(key)
    CACHE_LOOKUPS.labels(result="hit" if raw is not None else "miss").inc()
    return raw.encode() if isinstance(raw, str) else raw


async def get_chat(redis: Redis, key: str) -> ChatResponse | None:
    """The stored chat answer, or None (an unreadable entry counts as a miss)."""
    raw = await get(redis, key)
    if raw is None:
        return None
    try:
        return ChatResponse.model_validate_json(raw)
    except ValueError:
        return None


async def get_embeddings(redis: Redis, key: str) -> EmbeddingResponse | None:
    """The stored embeddings answer, or None."""
    raw = await get(redis, key)
    if raw is None:
        return None
    try:
        return EmbeddingResponse.model_validate_json(raw)
    except ValueError:
        return None


async def put(
    redis: Redis, key: str, response: ChatResponse | EmbeddingResponse, ttl_s: int = DEFAULT_TTL_S
) -> bool:
    """Store a complete answer for ``ttl_s`` seconds; False when it must not be cached."""
    if ttl_s <= 0:
        return False
    if isinstance(response, ChatResponse) and response.stop_reason == "content_filter":
        return False
    await redis.set(key, orjson.dumps(response.model_dump(mode="json")), ex=ttl_s)
    CACHE_LOOKUPS.labels(result="store").inc()
    return True


async def purge_tenant(redis: Redis, tenant_id: str) -> int:
    """Delete every cached answer of one tenant; returns how many were removed."""
    removed = 0
    batch: list[bytes | str] = []
    async for key in redis.scan_iter(match=f"nexus:cache:{{{tenant_id}}}:*", count=500):
        batch.append(key)
        if len(batch) >= 500:
            removed += int(await redis.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(await redis.unlink(*batch))
    return removed
