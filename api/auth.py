"""Bearer API key authentication with a Redis cache that revocation evicts at once.

Key records are cached in Redis (``nexus:key:<prefix>``, filled from Postgres, deleted by every
change to the key or its tenant). Each API process also keeps a copy in memory
(:class:`LocalKeyCache`), but only while Redis itself reports every change of those entries to
it (server-assisted client-side caching: ``CLIENT TRACKING … BCAST PREFIX nexus:key:``), so a
revocation still takes effect at once: in the process that made it, before its response is
sent; in every other process, as soon as Redis delivers the invalidation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from typing import Any

from fastapi import Request
from redis.asyncio import Redis
from sqlalchemy import select

from api.deps import AppState
from core.db.models import ApiKey, Tenant
from core.errors import RateLimited, Unauthenticated
from core.identity import Principal, Role, parse_key, secret_matches
from core.keys_service import KEY_CACHE, cache_key_record, cache_record, key_generation
from core.ratelimit import RateLimiter

log = logging.getLogger("nexus.auth")

KEY_CACHE_PREFIX = KEY_CACHE.format(prefix="")
INVALIDATION_CHANNEL = "__redis__:invalidate"
_MISSING = object()


class LocalKeyCache:
    """Key records in process memory, valid only while Redis reports every change to them.

    A background task holds one connection with ``CLIENT TRACKING ON REDIRECT <itself> BCAST
    PREFIX nexus:key:`` subscribed to ``__redis__:invalidate``: Redis then announces every
    write, delete and expiry of a cached key record, and the entry is dropped here. While that
    connection is not confirmed (starting, reconnecting, or silent for two heartbeats) the
    cache is empty and unused, so lookups fall back to Redis. A lookup that started before an
    invalidation never stores its (possibly stale) answer: every invalidation bumps an epoch
    that :meth:`put` compares. Entries also expire after ``ttl_s`` and the cache holds at most
    ``max_entries`` (oldest dropped first).
    """

    def __init__(
        self, redis_url: str, *, ttl_s: float, max_entries: int = 10_000, heartbeat_s: float = 1.0
    ) -> None:
        self._url = redis_url
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._heartbeat_s = heartbeat_s
        self._entries: dict[str, tuple[float, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self.epoch = 0
        self.live = False

    def get(self, prefix: str) -> Any:
        """The cached record (``None`` for an unknown key), or ``_MISSING``."""
        entry = self._entries.get(prefix)
        if entry is None:
            return _MISSING
        if entry[0] < time.monotonic():
            self._entries.pop(prefix, None)
            return _MISSING
        return entry[1]

    def put(self, prefix: str, record: Any, epoch: int) -> None:
        """Store what a lookup that started at ``epoch`` found, unless anything changed since."""
        if not self.live or epoch != self.epoch:
            return
        if len(self._entries) >= self._max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[prefix] = (time.monotonic() + self._ttl_s, record)

    def discard(self, prefix: str) -> None:
        """Forget one key (its record changed)."""
        self.epoch += 1
        self._entries.pop(prefix, None)

    def clear(self) -> None:
        """Forget everything."""
        self.epoch += 1
        self._entries.clear()

    def start(self) -> None:
        """Start following invalidations (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="key-cache-invalidations")

    async def aclose(self) -> None:
        """Stop following invalidations and forget everything."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.live = False
        self.clear()

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the cache stays off until it is back
                log.warning("key cache invalidations interrupted: %s", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _follow(self) -> None:
        client = Redis.from_url(self._url, protocol=2, socket_timeout=None, single_connection_client=True)
        try:
            client_id = await client.client_id()
            await client.client_tracking_on(clientid=client_id, prefix=[KEY_CACHE_PREFIX], bcast=True)
            conn = client.connection
            assert conn is not None
            await conn.send_command("SUBSCRIBE", INVALIDATION_CHANNEL)
            await conn.read_response()
            self.clear()
            self.live = True
            unanswered = False
            while True:
                message = await conn.read_response(timeout=self._heartbeat_s)
                if message is None:
                    if unanswered:
                        raise ConnectionError("no answer to the key cache heartbeat")
                    await conn.send_command("PING")
                    unanswered = True
                    continue
                unanswered = False
                if isinstance(message, list) and message[:1] == [b"message"]:
                    keys = message[2]
                    if keys is None:  # FLUSHDB / FLUSHALL
                        self.clear()
                        continue
                    for key in keys:
                        self.discard(key.decode()[len(KEY_CACHE_PREFIX) :])
        finally:
            self.live = False
            self.clear()
            with contextlib.suppress(Exception):
                await client.aclose()


async def _load_record(state: AppState, prefix: str) -> dict[str, Any] | None:
    local = state.gateway.keys if state.gateway is not None else None
    if local is not None:
        found = local.get(prefix)
        if found is not _MISSING:
            cached: dict[str, Any] | None = found
            return cached
        epoch = local.epoch
        record = await _load_shared_record(state, prefix)
        local.put(prefix, record, epoch)
        return record
    return await _load_shared_record(state, prefix)


async def _load_shared_record(state: AppState, prefix: str) -> dict[str, Any] | None:
    cache_key = KEY_CACHE.format(prefix=prefix)
    raw = await state.redis.get(cache_key)
    if raw is not None:
        cached: dict[str, Any] | None = json.loads(raw) if raw != b"null" else None
        return cached
    generation = await key_generation(state.redis, prefix)
    async with state.sessions() as session:
        row = (
            await session.execute(
                select(ApiKey, Tenant)
                .join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.prefix == prefix)
            )
        ).first()
    # Unknown prefixes are cached briefly too, so a flood of bad keys does not reach Postgres.
    payload = cache_record(row[0], row[1]) if row else b"null"
    ttl = state.settings.redis.key_cache_ttl_s if row else 5
    await cache_key_record(state.redis, prefix, generation, payload, ttl)
    return json.loads(payload) if row else None


async def authenticate(request: Request, state: AppState, *, rate_limit: bool = True) -> Principal:
    """Resolve the caller's key to a :class:`Principal`, then apply its request-rate limit.

    The gateway passes ``rate_limit=False``: its admission script counts requests itself, in the
    same Redis round trip as token limits and budgets.
    """
    cached = request.scope.get("nexus.principal")
    if isinstance(cached, Principal):
        return cached
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("missing bearer API key")
    parsed = parse_key(token.strip())
    if parsed is None:
        raise Unauthenticated("malformed API key")
    prefix, secret = parsed
    record = await _load_record(state, prefix)
    pepper = state.settings.security.key_pepper
    assert pepper is not None
    if record is None or not secret_matches(secret, record["secret_hash"], pepper.get_secret_value()):
        raise Unauthenticated("invalid API key")
    if record["revoked"]:
        raise Unauthenticated("API key revoked")
    expires_at = dt.datetime.fromisoformat(record["expires_at"]) if record["expires_at"] else None
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC):
        raise Unauthenticated("API key expired")
    if record["tenant_disabled"]:
        raise Unauthenticated("tenant disabled")
    principal = Principal(
        tenant_id=record["tenant_id"],
        key_id=uuid.UUID(record["id"]),
        role=Role(record["role"]),
        scopes=tuple(record["scopes"]) if record["scopes"] is not None else None,
        is_platform=record["is_platform"],
        expires_at=expires_at,
        rate_limit_per_minute=record["rate_limit_per_minute"],
        user_id=uuid.UUID(record["user_id"]) if record["user_id"] else None,
        extra={k: str(v) for k, v in (record.get("limits") or {}).items() if v is not None},
    )
    request.scope["nexus.principal"] = principal
    if not rate_limit:
        return principal
    limit = principal.rate_limit_per_minute or state.settings.api.rate_limit_per_minute
    decision = await RateLimiter(state.redis).hit(f"key:{principal.key_id}", limit)
    if not decision.allowed:
        raise RateLimited(
            f"request rate limit of {limit}/min exceeded for this key", retry_after_s=decision.retry_after_s
        )
    request.scope["nexus.principal"] = principal
    return principal
