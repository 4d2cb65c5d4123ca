"""Monthly budgets against real Valkey and Postgres: no overspend under concurrency, idempotent
settlement, reaped reservations, tenant caps and the rebuild from the inference log."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.errors import NotFound, Unavailable
from core.gateway import (
    BudgetExceeded,
    BudgetScope,
    InferenceLogWriter,
    InferenceRecord,
    budget_status,
    month_key,
    postgres_limits,
    rebuild_month,
    release,
    reserve,
    set_budget,
    settle,
)
from core.gateway.budgets import to_micro
from core.identity import Role
from core.keys_service import create_tenant, issue_key


@pytest_asyncio.fixture
async def redis(redis_port: int) -> AsyncIterator[Redis]:
    client = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    yield client
    await client.aclose()


async def tenant_with_keys(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, n: int = 2
) -> list[str]:
    async with sessions() as session, session.begin():
        await create_tenant(session, tenant_id=tenant_id, name=tenant_id)
        keys = []
        for _ in range(n):
            key, _full = await issue_key(
                session,
                tenant_id=tenant_id,
                role=Role.developer,
                name="k",
                scopes=None,
                expires_at=None,
                created_by="test",
                pepper="pepper",
            )
            keys.append(str(key.id))
    return keys


async def budget(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, scope: BudgetScope, usd: str | None
) -> None:
    async with sessions() as session, session.begin():
        await set_budget(session, redis, scope, None if usd is None else Decimal(usd))


async def test_fifty_concurrent_reserves_admit_exactly_what_fits(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, tenant_id: str
) -> None:
    (key_id,) = await tenant_with_keys(sessions, tenant_id, 1)
    scopes = [BudgetScope.for_key(tenant_id, key_id), BudgetScope.for_tenant(tenant_id)]
    await budget(sessions, redis, scopes[0], "1.00")
    limits = postgres_limits(sessions)  # the tenant has no budget: loaded once, cached as "none"

    async def attempt(i: int) -> object:
        try:
            return await reserve(redis, scopes, Decimal("0.05"), f"r{i}", limits=limits)
        except BudgetExceeded as exc:
            return exc

    outcomes = await asyncio.gather(*(attempt(i) for i in range(50)))
    admitted = [o for o in outcomes if not isinstance(o, BudgetExceeded)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
    assert len(admitted) == 20
    assert len(refused) == 30
    assert all(exc.status == 402 for exc in refused)
    assert all(exc.code == "budget_exceeded" for exc in refused)
    status = await budget_status(redis, scopes[0])
    assert status.reserved_usd == Decimal("1.00")
    assert status.spent_usd == 0

    settled = await asyncio.gather(*(settle(redis, r, Decimal("0.03")) for r in admitted))  # type: ignore[arg-type]
    assert all(settled)
    for scope in scopes:
        status = await budget_status(redis, scope)
        assert status.spent_usd == Decimal("0.60")
        assert status.reserved_usd == 0
    # 0.40 left: eight more estimates of 0.05 fit, the ninth does not.
    for i in range(8):
        await reserve(redis, scopes, Decimal("0.05"), f"more{i}", limits=limits)
    with pytest.raises(BudgetExceeded):
        await reserve(redis, scopes, Decimal("0.05"), "one-too-many", limits=limits)


async def test_settle_counts_once_and_release_frees(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, tenant_id: str
) -> None:
    (key_id,) = await tenant_with_keys(sessions, tenant_id, 1)
    scope = BudgetScope.for_key(tenant_id, key_id)
    await budget(sessions, redis, scope, "10")
    reservation = await reserve(redis, [scope], Decimal("2"), "req-1")
    again = await reserve(redis, [scope], Decimal("2"), "req-1")  # a retried admission holds nothing more
    assert again.request_id == reservation.request_id
    assert (await budget_status(redis, scope)).reserved_usd == Decimal(2)

    assert await settle(redis, reservation, Decimal("1.25")) is True
    assert await settle(redis, reservation, Decimal("1.25")) is False
    assert await release(redis, reservation) is False
    status = await budget_status(redis, scope)
    assert status.spent_usd == Decimal("1.25")
    assert status.reserved_usd == 0
    assert status.limit_usd == Decimal(10)

    failed = await reserve(redis, [scope], Decimal("3"), "req-2")
    assert (await budget_status(redis, scope)).reserved_usd == Decimal(3)
    assert await release(redis, failed) is True
    assert await settle(redis, failed, Decimal("3")) is False  # released requests stay released
    status = await budget_status(redis, scope)
    assert status.reserved_usd == 0
    assert status.spent_usd == Decimal("1.25")


async def test_expired_reservations_are_reaped_and_late_settles_still_count(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, tenant_id: str
) -> None:
    (key_id,) = await tenant_with_keys(sessions, tenant_id, 1)
    scope = BudgetScope.for_key(tenant_id, key_id)
    await budget(sessions, redis, scope, "1")
    t0 = time.time()
    crashed = await reserve(redis, [scope], Decimal("0.6"), "crashed", ttl_s=10, now=t0)
    with pytest.raises(BudgetExceeded):
        await reserve(redis, [scope], Decimal("0.6"), "blocked", ttl_s=10, now=t0 + 5)
    # After the deadline the next admission reaps the crashed replica's reservation first.
    await reserve(redis, [scope], Decimal("0.6"), "later", ttl_s=10, now=t0 + 11)
    status = await budget_status(redis, scope, month_key(t0 + 11))
    assert status.reserved_usd == Decimal("0.6")
    # The crashed call did finish after all: its real cost counts, the other reservation stays.
    assert await settle(redis, crashed, Decimal("0.5")) is True
    status = await budget_status(redis, scope, month_key(t0 + 11))
    assert status.spent_usd == Decimal("0.5")
    assert status.reserved_usd == Decimal("0.6")


async def test_tenant_budget_caps_its_keys_together(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, tenant_id: str
) -> None:
    key_a, key_b = await tenant_with_keys(sessions, tenant_id, 2)
    tenant = BudgetScope.for_tenant(tenant_id)
    await budget(sessions, redis, tenant, "1")
    limits = postgres_limits(sessions)
    admitted, refused_by = 0, []
    for i in range(12):
        key = key_a if i % 2 else key_b
        try:
            await reserve(
                redis, [BudgetScope.for_key(tenant_id, key), tenant], Decimal("0.1"), f"r{i}", limits=limits
            )
            admitted += 1
        except BudgetExceeded as exc:
            refused_by.append(exc.extra["scope"])
    assert refused_by == ["tenant", "tenant"]
    assert admitted == 10
    # Neither key has a budget of its own; each holds its own half.
    assert (await budget_status(redis, BudgetScope.for_key(tenant_id, key_a))).reserved_usd == Decimal("0.5")
    assert (await budget_status(redis, BudgetScope.for_key(tenant_id, key_a))).limit_usd is None


async def test_limits_come_from_postgres_when_the_cache_is_empty(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, tenant_id: str
) -> None:
    (key_id,) = await tenant_with_keys(sessions, tenant_id, 1)
    scope = BudgetScope.for_key(tenant_id, key_id)
    await budget(sessions, redis, scope, "0.10")
    await redis.delete(scope.limit_key())
    with pytest.raises(Unavailable):
        await reserve(redis, [scope], Decimal("0.01"), "no-loader")
    await reserve(redis, [scope], Decimal("0.06"), "a", limits=postgres_limits(sessions))
    assert await redis.get(scope.limit_key()) == b"100000"
    with pytest.raises(BudgetExceeded):
        await reserve(redis, [scope], Decimal("0.06"), "b")
    # Removing the budget lifts the cap at once.
    await budget(sessions, redis, scope, None)
    await reserve(redis, [scope], Decimal("100"), "c")


async def test_budgets_stay_inside_their_tenant(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, tenant_id: str
) -> None:
    (key_id,) = await tenant_with_keys(sessions, tenant_id, 1)
    other = f"t-{uuid.uuid4().hex[:10]}"
    await tenant_with_keys(sessions, other, 0)
    with pytest.raises(NotFound):
        await budget(sessions, redis, BudgetScope.for_key(other, key_id), "1")
    with pytest.raises(NotFound):
        await budget(sessions, redis, BudgetScope("key", "not-a-uuid", tenant_id), "1")


async def test_rebuild_month_equals_the_sum_of_the_logs(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, tenant_id: str
) -> None:
    key_a, key_b = await tenant_with_keys(sessions, tenant_id, 2)
    costs = {key_a: ["0.00012345", "0.5", "0.00000001"], key_b: ["1.23456789", "0.0000015"]}
    async with InferenceLogWriter(sessions) as writer:
        for key, amounts in costs.items():
            for amount in amounts:
                writer.enqueue(
                    InferenceRecord(
                        tenant_id=tenant_id,
                        key_id=uuid.UUID(key),
                        request_id=uuid.uuid4().hex,
                        model="sim-openai/gpt",
                        provider="sim",
                        cost_usd=Decimal(amount),
                    )
                )
    month = month_key()
    scope_a, scope_b = (BudgetScope.for_key(tenant_id, k) for k in (key_a, key_b))
    tenant = BudgetScope.for_tenant(tenant_id)
    for scope in (scope_a, scope_b, tenant):
        await redis.delete(scope.account_keys(month)[0])  # Redis lost its data
    async with sessions() as session:
        written = await rebuild_month(redis, session, month, tenant_id=tenant_id)
    assert written == 3
    micro = {k: sum(to_micro(Decimal(a)) for a in v) for k, v in costs.items()}
    assert (await budget_status(redis, scope_a)).spent_usd == Decimal(micro[key_a]) / 1_000_000
    assert (await budget_status(redis, scope_b)).spent_usd == Decimal(micro[key_b]) / 1_000_000
    total = Decimal(micro[key_a] + micro[key_b]) / 1_000_000
    assert (await budget_status(redis, tenant)).spent_usd == total

    # Settled in Redis but not yet logged: a rebuild does not lower it unless asked to.
    await redis.hset(tenant.account_keys(month)[0], "spent", 99_000_000)
    async with sessions() as session:
        await rebuild_month(redis, session, month, tenant_id=tenant_id)
        assert (await budget_status(redis, tenant)).spent_usd == 99
        await rebuild_month(redis, session, month, tenant_id=tenant_id, exact=True)
    assert (await budget_status(redis, tenant)).spent_usd == total


def test_month_key_now_rolls_over_at_the_month_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached "current month" answers until the boundary, then moves on (UTC)."""
    import datetime as dt

    from core.gateway import budgets

    last_second = dt.datetime(2026, 11, 30, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    monkeypatch.setattr(budgets.time, "time", lambda: last_second)
    assert budgets.month_key() == "2026-11"
    monkeypatch.setattr(budgets.time, "time", lambda: last_second + 1)
    assert budgets.month_key() == "2026-12"
    monkeypatch.setattr(budgets.time, "time", lambda: last_second - 86400 * 40)
    assert budgets.month_key() == "2026-10"
