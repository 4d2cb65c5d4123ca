"""Tenants, users and API keys: the repository-level operations the API and CLI share."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import ApiKey, Tenant
from core.errors import Conflict, NotFound
from core.identity import Role, generate_key, hash_secret

KEY_CACHE = "nexus:key:{prefix}"
KEY_GENERATION = "nexus:keygen:{prefix}"

# Cache fill that only lands if no eviction happened since the reader looked at the database:
# an auth request that read a key row just before its revocation committed cannot re-cache it.
_CACHE_IF_UNCHANGED = """
local gen = redis.call('GET', KEYS[2]) or '0'
if gen == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
  return 1
end
return 0
"""


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant | None:
    return await session.get(Tenant, tenant_id)


async def create_tenant(
    session: AsyncSession, *, tenant_id: str, name: str, is_platform: bool = False
) -> Tenant:
    """Insert a tenant; :class:`Conflict` if the id is taken."""
    if await session.get(Tenant, tenant_id) is not None:
        raise Conflict(f"tenant {tenant_id!r} already exists")
    tenant = Tenant(id=tenant_id, name=name, is_platform=is_platform, settings={})
    session.add(tenant)
    await session.flush()
    return tenant


async def issue_key(
    session: AsyncSession,
    *,
    tenant_id: str,
    role: Role,
    name: str,
    scopes: list[str] | None,
    expires_at: dt.datetime | None,
    created_by: str,
    pepper: str,
    user_id: uuid.UUID | None = None,
    rate_limit_per_minute: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the full key, which is never stored nor shown again."""
    if await session.get(Tenant, tenant_id) is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    material = generate_key()
    key = ApiKey(
        tenant_id=tenant_id,
        user_id=user_id,
        name=name,
        prefix=material.prefix,
        secret_hash=hash_secret(material.secret, pepper),
        role=role.value,
        scopes=scopes,
        expires_at=expires_at,
        created_by=created_by,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    session.add(key)
    await session.flush()
    return key, material.full


async def find_key(session: AsyncSession, tenant_id: str, key_id: uuid.UUID) -> ApiKey:
    """A key of ``tenant_id``; another tenant's key is :class:`NotFound`."""
    key = (
        await session.execute(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id))
    ).scalar_one_or_none()
    if key is None:
        raise NotFound("key not found")
    return key


TENANT_LIMIT_FIELDS = ("tenant_rpm", "tenant_tpm", "key_tpm", "log_content")


def tenant_limits(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The gateway limits and flags a tenant's settings set (see ``TenantSettings`` in the API)."""
    settings = settings or {}
    return {name: settings[name] for name in TENANT_LIMIT_FIELDS if settings.get(name) is not None}


def cache_record(key: ApiKey, tenant: Tenant) -> bytes:
    """What the auth path caches in Redis for a key (the hash, never the secret)."""
    record: dict[str, Any] = {
        "id": str(key.id),
        "tenant_id": key.tenant_id,
        "secret_hash": key.secret_hash,
        "role": key.role,
        "scopes": key.scopes,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked": key.revoked_at is not None,
        "is_platform": tenant.is_platform,
        "tenant_disabled": tenant.disabled_at is not None,
        "rate_limit_per_minute": key.rate_limit_per_minute,
        "user_id": str(key.user_id) if key.user_id else None,
        "limits": tenant_limits(tenant.settings),
    }
    return json.dumps(record).encode()


async def key_generation(redis: Redis, prefix: str) -> bytes:
    """Read before loading a key from the database; pass to :func:`cache_key_record`."""
    value = await redis.get(KEY_GENERATION.format(prefix=prefix))
    if value is None:
        return b"0"
    return value if isinstance(value, bytes) else str(value).encode()


async def cache_key_record(redis: Redis, prefix: str, generation: bytes, record: bytes, ttl_s: int) -> None:
    """Cache ``record`` unless the key was evicted after ``generation`` was read."""
    await redis.eval(
        _CACHE_IF_UNCHANGED,
        2,
        KEY_CACHE.format(prefix=prefix),
        KEY_GENERATION.format(prefix=prefix),
        generation,
        record,
        ttl_s,
    )


async def evict_key(redis: Redis, prefix: str) -> None:
    """Drop a cached key so a revocation takes effect on the very next request.

    Call it after the change committed (the API does so from the session dependency).
    """
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(KEY_GENERATION.format(prefix=prefix))
        pipe.delete(KEY_CACHE.format(prefix=prefix))
        await pipe.execute()


def evict_after_commit(session: AsyncSession, prefix: str) -> None:
    """Schedule :func:`evict_key` for when the caller's transaction has committed."""
    session.info.setdefault("evict_key_prefixes", []).append(prefix)
