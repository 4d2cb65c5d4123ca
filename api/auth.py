"""Bearer API key authentication with a Redis cache that revocation evicts at once."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from fastapi import Request
from sqlalchemy import select

from api.deps import AppState
from core.db.models import ApiKey, Tenant
from core.errors import RateLimited, Unauthenticated
from core.identity import Principal, Role, parse_key, secret_matches
from core.keys_service import KEY_CACHE, cache_key_record, cache_record, key_generation
from core.ratelimit import RateLimiter


async def _load_record(state: AppState, prefix: str) -> dict[str, Any] | None:
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
