"""Gateway admission against real Valkey: request and token windows plus budgets in one script."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from core.errors import RateLimited
from core.gateway import AdmissionRequest, BudgetExceeded, BudgetScope, admit, budget_status, complete
from core.gateway.budgets import cache_limits
from core.gateway.scripts import retry_after_s

NOW = 1_900_000_020.0  # 2030-03-17, 0 s into a minute: windows do not slide mid-test


class CountingRedis(Redis):
    """A client that counts the commands it sends (each one is a round trip outside pipelines)."""

    commands: list[str]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return await super().execute_command(*args, **options)


@pytest_asyncio.fixture
async def redis(redis_port: int) -> AsyncIterator[CountingRedis]:
    client = CountingRedis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    client.commands = []
    yield client
    await client.aclose()


def request(tenant_id: str, key_id: str, **fields: Any) -> AdmissionRequest:
    base: dict[str, Any] = {
        "tenant_id": tenant_id,
        "key_id": key_id,
        "request_id": uuid.uuid4().hex,
        "estimated_tokens": 100,
        "estimated_usd": Decimal("0.01"),
    }
    return AdmissionRequest(**(base | fields))


async def no_budgets(redis: Redis, tenant_id: str, *key_ids: str) -> None:
    scopes = [BudgetScope.for_tenant(tenant_id), *(BudgetScope.for_key(tenant_id, k) for k in key_ids)]
    await cache_limits(redis, dict.fromkeys(scopes), ttl_s=600)


async def test_admit_and_complete_are_one_round_trip_each(redis: CountingRedis, tenant_id: str) -> None:
    key = uuid.uuid4().hex
    await no_budgets(redis, tenant_id, key)
    limits = {"key_rpm": 100, "tenant_rpm": 1000, "key_tpm": 10_000, "tenant_tpm": 100_000}
    warm = await admit(redis, request(tenant_id, key, **limits))  # loads the scripts once
    await complete(redis, warm, 50, Decimal("0.001"))
    redis.commands.clear()
    admission = await admit(redis, request(tenant_id, key, **limits))
    assert redis.commands == ["EVALSHA"]
    redis.commands.clear()
    assert await complete(redis, admission, 80, Decimal("0.002")) is True
    assert redis.commands == ["EVALSHA"]


async def test_request_rate_per_key_and_per_tenant(redis: CountingRedis, tenant_id: str) -> None:
    key_a, key_b = uuid.uuid4().hex, uuid.uuid4().hex
    await no_budgets(redis, tenant_id, key_a, key_b)
    for i in range(3):
        admission = await admit(redis, request(tenant_id, key_a, key_rpm=3, tenant_rpm=5), now=NOW)
        assert admission.remaining_requests == 2 - i
    with pytest.raises(RateLimited) as refused:
        await admit(redis, request(tenant_id, key_a, key_rpm=3, tenant_rpm=5), now=NOW)
    assert refused.value.retry_after_s >= 1
    assert "this key" in refused.value.detail
    await admit(redis, request(tenant_id, key_b, key_rpm=3, tenant_rpm=5), now=NOW)
    await admit(redis, request(tenant_id, key_b, key_rpm=3, tenant_rpm=5), now=NOW)
    with pytest.raises(RateLimited) as refused:
        await admit(redis, request(tenant_id, key_b, key_rpm=3, tenant_rpm=5), now=NOW)
    assert "this tenant" in refused.value.detail


async def test_token_rate_charges_the_estimate_then_adjusts(redis: CountingRedis, tenant_id: str) -> None:
    key = uuid.uuid4().hex
    await no_budgets(redis, tenant_id, key)
    first = await admit(redis, request(tenant_id, key, estimated_tokens=600, key_tpm=1000), now=NOW)
    assert first.remaining_tokens == 400
    with pytest.raises(RateLimited) as refused:
        await admit(redis, request(tenant_id, key, estimated_tokens=600, key_tpm=1000), now=NOW)
    assert refused.value.retry_after_s >= 1
    # The call used far fewer tokens than estimated: the window gets the difference back.
    assert await complete(redis, first, 100, Decimal(0)) is True
    assert await complete(redis, first, 100, Decimal(0)) is False
    second = await admit(redis, request(tenant_id, key, estimated_tokens=600, key_tpm=1000), now=NOW)
    assert second.remaining_tokens == 300
    # More than estimated is charged too.
    await complete(redis, second, 900, Decimal(0))
    with pytest.raises(RateLimited):
        await admit(redis, request(tenant_id, key, estimated_tokens=1, key_tpm=1000), now=NOW)


async def test_a_refusal_charges_nothing(redis: CountingRedis, tenant_id: str) -> None:
    key = uuid.uuid4().hex
    scope = BudgetScope.for_key(tenant_id, key)
    await no_budgets(redis, tenant_id)
    await cache_limits(redis, {scope: Decimal("0.05")}, ttl_s=600)
    # Refused by the token window: no budget is reserved.
    with pytest.raises(RateLimited) as too_large:
        await admit(redis, request(tenant_id, key, estimated_tokens=5000, key_tpm=1000), now=NOW)
    assert "larger than the limit" in too_large.value.detail
    assert (await budget_status(redis, scope, "2030-03")).reserved_usd == 0
    # Refused by the budget: the request and token windows are not charged.
    with pytest.raises(BudgetExceeded):
        await admit(
            redis, request(tenant_id, key, estimated_usd=Decimal("0.06"), key_rpm=1, key_tpm=1000), now=NOW
        )
    admitted = await admit(
        redis, request(tenant_id, key, estimated_tokens=1000, key_rpm=1, key_tpm=1000), now=NOW
    )
    assert admitted.remaining_requests == 0
    assert admitted.remaining_tokens == 0


async def test_concurrent_admissions_respect_both_windows_and_budget(
    redis: CountingRedis, tenant_id: str
) -> None:
    key = uuid.uuid4().hex
    await no_budgets(redis, tenant_id, key)
    await cache_limits(redis, {BudgetScope.for_tenant(tenant_id): Decimal("0.30")}, ttl_s=600)

    async def attempt() -> str:
        try:
            await admit(redis, request(tenant_id, key, key_rpm=40, key_tpm=10_000), now=NOW)
            return "ok"
        except RateLimited:
            return "rate"
        except BudgetExceeded:
            return "budget"

    outcomes = await asyncio.gather(*(attempt() for _ in range(50)))
    assert outcomes.count("ok") == 30  # the $0.30 budget fits 30 calls of $0.01
    assert outcomes.count("rate") + outcomes.count("budget") == 20


async def test_admission_completes_the_budget(redis: CountingRedis, tenant_id: str) -> None:
    key = uuid.uuid4().hex
    await no_budgets(redis, tenant_id, key)
    admission = await admit(redis, request(tenant_id, key, estimated_usd=Decimal("0.5")), now=NOW)
    duplicate = await admit(redis, request(tenant_id, key, request_id=admission.request_id), now=NOW)
    assert duplicate.duplicate
    tenant = BudgetScope.for_tenant(tenant_id)
    assert (await budget_status(redis, tenant, "2030-03")).reserved_usd == Decimal("0.5")
    await complete(redis, admission, 10, Decimal("0.123"))
    status = await budget_status(redis, tenant, "2030-03")
    assert status.spent_usd == Decimal("0.123")
    assert status.reserved_usd == 0


def test_retry_after_covers_the_sliding_window() -> None:
    # Full current minute, nothing before: wait for it to become the previous one and decay.
    assert retry_after_s(60_000, 0, cur=25, prev=0, cost=1, limit=25) == 63
    # Room in the current minute, the previous one decays: 30 s into the window it weighs half.
    assert retry_after_s(60_000, 30_000, cur=0, prev=20, cost=1, limit=10) == 3
    # A request larger than the limit waits a full window (the gateway rejects it anyway).
    assert retry_after_s(60_000, 0, cur=0, prev=0, cost=11, limit=10) == 60


async def test_every_key_it_writes_expires(redis: CountingRedis, tenant_id: str) -> None:
    key = uuid.uuid4().hex
    await no_budgets(redis, tenant_id, key)
    admission = await admit(redis, request(tenant_id, key, key_rpm=10, tenant_tpm=10_000), now=NOW)
    written = [k async for k in redis.scan_iter(match=f"nexus:gw:{{{tenant_id}}}:*", count=1000)]
    assert len(written) >= 10  # limits, 2 request/token buckets, 2 scopes x (account, amounts, deadlines)
    for name in written:
        assert await redis.ttl(name) > 0, name
    await complete(redis, admission, 10, Decimal("0.001"))
    written = [k async for k in redis.scan_iter(match=f"nexus:gw:{{{tenant_id}}}:*", count=1000)]
    for name in written:
        assert await redis.ttl(name) > 0, name
