"""Availability/latency probes of the platform's dependencies, as plain async functions.

A check never raises for an unhealthy target: the outcome (ok, latency, short reason) *is*
the data the SLA centre charts. Reasons are exception class names or HTTP statuses, never
URLs or messages that could carry credentials.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.contracts import HttpTarget, ProbeSample, validate_http_url
from core.db.models import ProbeSample as ProbeSampleRow

POSTGRES = "postgres"
REDIS = "redis"


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | httpx.TimeoutException):
        return "timeout"
    return type(exc).__name__


async def check_postgres(session: AsyncSession, timeout_s: float = 5.0) -> ProbeSample:
    """``SELECT 1`` round trip on ``session``."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            value = await session.scalar(text("SELECT 1"))
        ok = value == 1
        return ProbeSample(
            target=POSTGRES, ok=ok, latency_ms=_elapsed_ms(started), error=None if ok else "unexpected_result"
        )
    except Exception as exc:
        return ProbeSample(target=POSTGRES, ok=False, latency_ms=_elapsed_ms(started), error=_reason(exc))


async def check_redis(redis: Redis, timeout_s: float = 5.0) -> ProbeSample:
    """``PING`` round trip."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            pong = await redis.ping()
        return ProbeSample(
            target=REDIS, ok=bool(pong), latency_ms=_elapsed_ms(started), error=None if pong else "no_pong"
        )
    except Exception as exc:
        return ProbeSample(target=REDIS, ok=False, latency_ms=_elapsed_ms(started), error=_reason(exc))


async def check_http(client: httpx.AsyncClient, target: HttpTarget, timeout_s: float = 5.0) -> ProbeSample:
    """``GET target.url``; reachable and not a 5xx counts as available. Redirects are not followed."""
    validate_http_url(target.url)
    started = time.perf_counter()
    try:
        response = await client.get(target.url, timeout=timeout_s, follow_redirects=False)
    except Exception as exc:
        return ProbeSample(target=target.name, ok=False, latency_ms=_elapsed_ms(started), error=_reason(exc))
    ok = response.status_code < 500
    return ProbeSample(
        target=target.name,
        ok=ok,
        latency_ms=_elapsed_ms(started),
        status_code=response.status_code,
        error=None if ok else f"http_{response.status_code}",
    )


def sample_key(workflow_id: str, activity_id: str, target: str) -> str:
    """Idempotency key of one stored sample."""
    return f"{workflow_id}:{activity_id}:{target}"


async def record_samples(
    session: AsyncSession,
    *,
    tenant_id: str,
    workflow_id: str,
    activity_id: str,
    samples: Sequence[ProbeSample],
) -> int:
    """Insert samples once (``ON CONFLICT DO NOTHING`` on the idempotency key); returns rows added."""
    if not samples:
        return 0
    rows: list[dict[str, Any]] = [
        {
            "tenant_id": tenant_id,
            "workflow_id": workflow_id,
            "idempotency_key": sample_key(workflow_id, activity_id, s.target),
            "target": s.target,
            "ok": s.ok,
            "latency_ms": s.latency_ms,
            "error": s.error,
        }
        for s in samples
    ]
    stmt = (
        insert(ProbeSampleRow)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(ProbeSampleRow.id)
    )
    return len((await session.execute(stmt)).scalars().all())


async def recent_samples(
    session: AsyncSession, tenant_id: str, *, target: str | None = None, limit: int = 100
) -> list[ProbeSampleRow]:
    """The tenant's newest samples, optionally for one target."""
    query = select(ProbeSampleRow).where(ProbeSampleRow.tenant_id == tenant_id)
    if target:
        query = query.where(ProbeSampleRow.target == target)
    query = query.order_by(ProbeSampleRow.created_at.desc(), ProbeSampleRow.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())
