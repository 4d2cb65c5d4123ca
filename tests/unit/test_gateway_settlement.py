"""Batched settlement of finished gateway calls against real Valkey."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest_asyncio
from redis.asyncio import Redis

from core.gateway import AdmissionRequest, BudgetScope, admit, budget_status
from core.gateway.budgets import cache_limits
from core.gateway.limits import complete_many
from core.gateway.settlement import Settler


@pytest_asyncio.fixture
async def redis(redis_port: int) -> AsyncIterator[Redis]:
    client = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    yield client
    await client.aclose()


async def admitted(redis: Redis, tenant_id: str, key: str, n: int) -> list[object]:
    scopes = [BudgetScope.for_tenant(tenant_id), BudgetScope.for_key(tenant_id, key)]
    await cache_limits(redis, {scopes[0]: Decimal("10"), scopes[1]: None}, ttl_s=600)
    return [
        await admit(
            redis,
            AdmissionRequest(
                tenant_id=tenant_id,
                key_id=key,
                request_id=uuid.uuid4().hex,
                estimated_tokens=100,
                estimated_usd=Decimal("0.05"),
                key_tpm=100_000,
            ),
        )
        for _ in range(n)
    ]


async def test_settler_settles_every_call_once_and_drains_at_shutdown(redis: Redis, tenant_id: str) -> None:
    key = uuid.uuid4().hex
    calls = await admitted(redis, tenant_id, key, 5)
    tenant = BudgetScope.for_tenant(tenant_id)
    assert (await budget_status(redis, tenant)).reserved_usd == Decimal("0.25")

    settler = Settler(redis, interval_s=0.01, max_batch=2)
    settler.start()
    for admission in calls:
        settler.submit(admission, 40, Decimal("0.01"))  # type: ignore[arg-type]
    await settler.aclose()  # whatever is still queued is settled before it returns
    assert settler.pending == 0
    assert (settler.settled, settler.failed) == (5, 0)
    status = await budget_status(redis, tenant)
    assert status.reserved_usd == 0
    assert status.spent_usd == Decimal("0.05")

    # Settling is idempotent per request, also in a batch: nothing is counted twice.
    again = await complete_many(redis, [(a, 40, Decimal("0.01")) for a in calls])  # type: ignore[misc]
    assert again == [False] * 5
    assert (await budget_status(redis, tenant)).spent_usd == Decimal("0.05")


async def test_settlement_survives_a_script_cache_flush(redis: Redis, tenant_id: str) -> None:
    key = uuid.uuid4().hex
    calls = await admitted(redis, tenant_id, key, 3)
    await redis.script_flush()  # as after a Redis restart: EVALSHA fails, the batch reloads
    results = await complete_many(redis, [(a, 10, Decimal("0.02")) for a in calls])  # type: ignore[misc]
    assert results == [True] * 3
    assert (await budget_status(redis, BudgetScope.for_tenant(tenant_id))).spent_usd == Decimal("0.06")
