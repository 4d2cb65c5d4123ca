"""Admission leases against real Valkey: one round trip for many calls, and no limit loosened."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from core.errors import RateLimited
from core.gateway import AdmissionRequest, BudgetExceeded, BudgetScope, budget_status
from core.gateway.budgets import cache_limits, month_key
from core.gateway.leases import LIMIT_SHARE, LeaseBook
from core.gateway.limits import Admission
from core.gateway.settlement import Settler

NOW = 1_900_000_020.0  # 0 s into a minute: the windows do not slide unless a test moves the clock


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def redis(redis_port: int) -> AsyncIterator[Redis]:
    client = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    yield client
    await client.aclose()


def call(tenant_id: str, key_id: str, **fields: Any) -> AdmissionRequest:
    base: dict[str, Any] = {
        "tenant_id": tenant_id,
        "key_id": key_id,
        "request_id": uuid.uuid4().hex,
        "estimated_tokens": 100,
        "estimated_usd": Decimal("0.01"),
        "key_rpm": 100_000,
    }
    return AdmissionRequest(**(base | fields))


async def budgets(redis: Redis, tenant_id: str, key_id: str, tenant_usd: Decimal | None = None) -> None:
    tenant, key = BudgetScope.for_tenant(tenant_id), BudgetScope.for_key(tenant_id, key_id)
    await cache_limits(redis, {tenant: tenant_usd, key: None}, ttl_s=600)


async def warm_up(book: LeaseBook, clock: Clock, req: AdmissionRequest, calls: int) -> list[Admission]:
    """``calls`` admissions in one second, then the clock moves to the next: the key is busy now."""
    admitted = [await book.admit(_fresh(req)) for _ in range(calls)]
    clock.now += 1.0
    return admitted


def _fresh(req: AdmissionRequest) -> AdmissionRequest:
    return AdmissionRequest(**{**req.__dict__, "request_id": uuid.uuid4().hex})


async def request_count(redis: Redis, tenant_id: str, key_id: str, now: float) -> int:
    bucket = int(now * 1000) // 60_000
    raw = await redis.get(f"nexus:gw:{{{tenant_id}}}:rl:req:key:{key_id}:{bucket}")
    return int(raw or 0)


async def test_a_busy_key_shares_one_round_trip_and_settles_exactly(redis: Redis, tenant_id: str) -> None:
    key = uuid.uuid4().hex
    await budgets(redis, tenant_id, key)
    clock, settler = Clock(), Settler(redis)
    book = LeaseBook(redis, settler, max_requests=16, clock=clock)
    req = call(tenant_id, key)

    quiet = await warm_up(book, clock, req, 100)  # a new key: admitted one by one
    assert book.acquired == 0
    assert all(a.lease is None for a in quiet)
    busy = [await book.admit(_fresh(req)) for _ in range(40)]
    # 100 calls in the last second → leases of min(16, 100 × 0.25) calls: 3 round trips for 40.
    assert book.acquired == 3
    assert book.local == 40
    assert REGISTRY.get_sample_value("nexus_gateway_leased_calls_total") >= 40
    assert all(a.lease is not None for a in busy)
    # Charged before any call ran: 100 single calls plus three leases of 16.
    assert await request_count(redis, tenant_id, key, clock.now) == 100 + 48

    for admission in [*quiet, *busy]:
        book.finish(admission, 80, Decimal("0.002"))
    await book.aclose()
    await settler.flush()
    assert settler.failed == 0
    # The 8 shares nobody used went back to the window; reservations were replaced by the actuals.
    assert await request_count(redis, tenant_id, key, clock.now) == 140
    status = await budget_status(redis, BudgetScope.for_tenant(tenant_id), month_key(clock.now))
    assert status.reserved_usd == 0
    assert status.spent_usd == Decimal("0.002") * 140
    tokens_key = f"nexus:gw:{{{tenant_id}}}:rl:tok:key:{key}:{int(clock.now * 1000) // 60_000}"
    assert await redis.get(tokens_key) is None  # no token limit: no token window either


async def test_a_lease_ends_at_its_ttl_and_its_calls_settle_once_when_the_last_ends(
    redis: Redis, tenant_id: str
) -> None:
    key = uuid.uuid4().hex
    await budgets(redis, tenant_id, key)
    clock, settler = Clock(), Settler(redis)
    book = LeaseBook(redis, settler, max_requests=8, clock=clock)
    req = call(tenant_id, key, key_tpm=1_000_000)
    for admission in await warm_up(book, clock, req, 40):
        book.finish(admission, 100, Decimal("0.01"))
    first = await book.admit(_fresh(req))
    second = await book.admit(_fresh(req))
    assert first.lease is second.lease is not None
    clock.now += 0.3  # past the lease's 0.25 s
    book.sweep()
    book.finish(first, 50, Decimal("0.004"))
    await settler.flush()
    tenant = BudgetScope.for_tenant(tenant_id)
    month = month_key(clock.now)
    assert (await budget_status(redis, tenant, month)).reserved_usd == Decimal("0.08")  # still in flight
    book.finish(second, 70, Decimal("0.006"))
    await settler.flush()
    status = await budget_status(redis, tenant, month)
    assert (status.reserved_usd, status.spent_usd) == (0, Decimal("0.41"))
    assert await request_count(redis, tenant_id, key, clock.now) == 42
    bucket = int(clock.now * 1000) // 60_000
    tokens = int(await redis.get(f"nexus:gw:{{{tenant_id}}}:rl:tok:key:{key}:{bucket}") or 0)
    assert tokens == 40 * 100 + 50 + 70  # the lease's 8 estimates replaced by what was used
    await book.aclose()
    await settler.flush()
    assert settler.settled == 41  # 40 single calls + one lease, each once


async def test_a_lease_never_outlives_the_minute_window_it_was_charged_in(
    redis: Redis, tenant_id: str
) -> None:
    key = uuid.uuid4().hex
    await budgets(redis, tenant_id, key)
    clock, settler = Clock(NOW + 58.0), Settler(redis)
    book = LeaseBook(redis, settler, max_requests=8, ttl_s=5.0, clock=clock)
    await warm_up(book, clock, call(tenant_id, key), 40)  # now 59 s into the minute
    admission = await book.admit(call(tenant_id, key))
    assert admission.lease is not None
    assert admission.lease.expires_at == NOW + 60.0
    clock.now = NOW + 60.0
    fresh = await book.admit(call(tenant_id, key))
    assert fresh.lease is not admission.lease  # the next minute gets its own lease


async def test_small_limits_and_quiet_keys_are_admitted_one_by_one(redis: Redis, tenant_id: str) -> None:
    key = uuid.uuid4().hex
    await budgets(redis, tenant_id, key)
    clock = Clock()
    book = LeaseBook(redis, Settler(redis), clock=clock)
    small = call(tenant_id, key, key_rpm=LIMIT_SHARE * 2 - 1)  # a lease could take < 2 calls
    await warm_up(book, clock, small, 100)
    singles = [await book.admit(_fresh(small)) for _ in range(20)]
    assert all(a.lease is None for a in singles)
    tokens = call(tenant_id, key, key_tpm=100 * LIMIT_SHARE)  # one estimate is 1/100 of the limit
    assert (await book.admit(tokens)).lease is None
    assert book.acquired == 0


async def test_rate_limits_hold_across_processes_that_lease(redis: Redis, tenant_id: str) -> None:
    """Two API processes (two books) share a key limited to 1,000 calls a minute."""
    key = uuid.uuid4().hex
    await budgets(redis, tenant_id, key)
    clock = Clock()
    books = [LeaseBook(redis, Settler(redis), clock=clock) for _ in range(2)]
    req = call(tenant_id, key, key_rpm=1_000)
    for book in books:
        for _ in range(40):
            await book.admit(_fresh(req))
    clock.now += 1.0  # both busy: leases of 1,000 / 100 = 10 calls

    in_flight = asyncio.Semaphore(32)  # like a gateway at concurrency 32

    async def one(book: LeaseBook) -> Admission | RateLimited:
        async with in_flight:
            try:
                return await book.admit(_fresh(req))
            except RateLimited as exc:
                return exc

    results = await asyncio.gather(*(one(books[i % 2]) for i in range(1_200)))
    admitted = [r for r in results if isinstance(r, Admission)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert sum(b.acquired for b in books) > 0
    assert 80 + len(admitted) <= 1_000  # never above the limit
    assert 80 + len(admitted) >= 1_000 - 2 * 10  # at most one lease per process left unused
    assert refused
    assert all(r.retry_after_s and r.retry_after_s >= 1 for r in refused)
    assert await request_count(redis, tenant_id, key, clock.now) <= 1_000


@pytest.mark.parametrize("tenant_usd", [Decimal("1.00"), Decimal("3.00")])
async def test_leases_never_overspend_a_budget_under_concurrency(
    redis: Redis, tenant_id: str, tenant_usd: Decimal
) -> None:
    key = uuid.uuid4().hex
    await budgets(redis, tenant_id, key, tenant_usd)
    clock, settler = Clock(), Settler(redis)
    book = LeaseBook(redis, settler, clock=clock)
    req = call(tenant_id, key, estimated_usd=Decimal("0.01"))
    for admission in await warm_up(book, clock, req, 40):  # $0.40 reserved, not yet settled
        book.finish(admission, 100, Decimal("0.01"))

    in_flight = asyncio.Semaphore(32)

    async def one() -> Admission | BudgetExceeded:
        async with in_flight:
            try:
                return await book.admit(_fresh(req))
            except BudgetExceeded as exc:
                return exc

    results = await asyncio.gather(*(one() for _ in range(400)))
    admitted = [r for r in results if isinstance(r, Admission)]
    assert any(isinstance(r, BudgetExceeded) for r in results)
    # Every admitted call's estimate is covered: 40 earlier calls plus these fit the budget.
    assert Decimal("0.01") * (40 + len(admitted)) <= tenant_usd
    for admission in admitted:
        book.finish(admission, 100, Decimal("0.01"))
    await book.aclose()
    await settler.flush()
    status = await budget_status(redis, BudgetScope.for_tenant(tenant_id), month_key(clock.now))
    assert status.reserved_usd == 0
    assert status.spent_usd == Decimal("0.01") * (40 + len(admitted)) <= tenant_usd
    # Near the end of the budget leases are refused and calls are admitted exactly, one by one.
    assert status.spent_usd >= tenant_usd - Decimal("0.01") * book._max


async def test_a_call_whose_estimate_does_not_fit_the_lease_is_not_taken_from_it(
    redis: Redis, tenant_id: str
) -> None:
    key = uuid.uuid4().hex
    await budgets(redis, tenant_id, key)
    clock = Clock()
    book = LeaseBook(redis, Settler(redis), max_requests=8, clock=clock)
    req = call(tenant_id, key, key_tpm=10_000_000)
    await warm_up(book, clock, req, 40)
    small = await book.admit(_fresh(req))  # a lease of 8 × ($0.01, 100 tokens)
    assert small.lease is not None
    assert small.lease.micro_left == 70_000
    dear = await book.admit(call(tenant_id, key, key_tpm=10_000_000, estimated_usd=Decimal("0.08")))
    assert dear.lease is not small.lease
    assert small.lease.ended  # replaced: its unused shares go back when its call ends
    # 5,000 tokens are 1/80 of a 400,000 token limit: more than a lease may take per call.
    many_tokens = await book.admit(call(tenant_id, key, key_tpm=400_000, estimated_tokens=5_000))
    assert many_tokens.lease is None


async def test_a_call_cancelled_while_its_lease_is_taken_leaves_nothing_charged(
    redis: Redis, tenant_id: str
) -> None:
    key = uuid.uuid4().hex
    await budgets(redis, tenant_id, key)
    clock, settler = Clock(), Settler(redis)
    book = LeaseBook(redis, settler, max_requests=8, clock=clock)
    req = call(tenant_id, key)
    for admission in await warm_up(book, clock, req, 40):
        book.finish(admission, 100, Decimal("0.01"))
    leaving = asyncio.create_task(book.admit(_fresh(req)))
    await asyncio.sleep(0)  # the lease's round trip is under way
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    nxt = await book.admit(_fresh(req))
    assert book.acquired == 1  # the lease was still installed, and the next call took from it
    assert nxt.lease is not None
    book.finish(nxt, 100, Decimal("0.01"))
    await book.aclose()
    await settler.flush()
    status = await budget_status(redis, BudgetScope.for_tenant(tenant_id), month_key(clock.now))
    assert status.reserved_usd == 0
    assert status.spent_usd == Decimal("0.41")
    assert await request_count(redis, tenant_id, key, clock.now) == 41  # 7 unused shares returned
