"""The Postgres side of budgets: limits (``budgets`` table) and spend rebuilt from the inference log."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal

from redis.asyncio import Redis
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.gateway_models import Budget, InferenceLog
from core.db.models import ApiKey
from core.errors import BadRequest, NotFound
from core.gateway.budgets import (
    ACCOUNT_TTL_S,
    LIMIT_TTL_S,
    BudgetScope,
    LimitLoader,
    ScopeType,
    cache_limits,
    month_bounds,
)
from core.gateway.scripts import SET_SPENT, SET_SPENT_SCRIPT


async def load_limits(
    session: AsyncSession, scopes: Sequence[BudgetScope]
) -> dict[BudgetScope, Decimal | None]:
    """Budgets of ``scopes`` from Postgres (None where a scope has none); tenant-filtered."""
    result: dict[BudgetScope, Decimal | None] = dict.fromkeys(scopes)
    if not scopes:
        return result
    match = or_(
        *(
            and_(
                Budget.tenant_id == s.tenant_id,
                Budget.scope_type == s.scope_type,
                Budget.scope_id == s.scope_id,
            )
            for s in scopes
        )
    )
    rows = await session.execute(
        select(Budget.scope_type, Budget.scope_id, Budget.tenant_id, Budget.monthly_limit_usd).where(match)
    )
    for scope_type, scope_id, tenant_id, limit in rows:
        kind: ScopeType = "key" if scope_type == "key" else "tenant"
        result[BudgetScope(kind, scope_id, tenant_id)] = limit
    return result


def postgres_limits(sessions: async_sessionmaker[AsyncSession]) -> LimitLoader:
    """A :data:`LimitLoader` that reads Postgres in its own short session (cache misses only)."""

    async def _load(scopes: Sequence[BudgetScope]) -> Mapping[BudgetScope, Decimal | None]:
        async with sessions() as session:
            return await load_limits(session, scopes)

    return _load


async def set_budget(
    session: AsyncSession,
    redis: Redis,
    scope: BudgetScope,
    monthly_limit_usd: Decimal | None,
    *,
    ttl_s: int = LIMIT_TTL_S,
) -> None:
    """Create, change or (with None) remove a budget, in Postgres and in the Redis cache.

    A key scope must name a key of the scope's tenant (:class:`NotFound` otherwise). The
    caller's transaction is only flushed; the cache is written at once, so a rolled-back change
    can linger in Redis for at most ``ttl_s``.
    """
    if monthly_limit_usd is not None and monthly_limit_usd < 0:
        raise BadRequest("a budget cannot be negative")
    if scope.scope_type == "key":
        try:
            key_uuid = uuid.UUID(scope.scope_id)
        except ValueError as exc:
            raise NotFound("key not found") from exc
        owner = await session.scalar(
            select(ApiKey.id).where(ApiKey.id == key_uuid, ApiKey.tenant_id == scope.tenant_id)
        )
        if owner is None:
            raise NotFound("key not found")
    same = (
        Budget.tenant_id == scope.tenant_id,
        Budget.scope_type == scope.scope_type,
        Budget.scope_id == scope.scope_id,
    )
    if monthly_limit_usd is None:
        await session.execute(delete(Budget).where(*same))
    else:
        stmt = insert(Budget).values(
            scope_type=scope.scope_type,
            scope_id=scope.scope_id,
            tenant_id=scope.tenant_id,
            monthly_limit_usd=monthly_limit_usd,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["scope_type", "scope_id"],
            set_={"monthly_limit_usd": stmt.excluded.monthly_limit_usd, "updated_at": func.now()},
            where=Budget.tenant_id == scope.tenant_id,
        )
        await session.execute(stmt)
    await session.flush()
    await cache_limits(redis, {scope: monthly_limit_usd}, ttl_s)


async def rebuild_month(
    redis: Redis,
    session: AsyncSession,
    month: str,
    *,
    tenant_id: str | None = None,
    exact: bool = False,
) -> int:
    """Recompute spent totals of ``month`` from ``inference_logs``; returns the scopes written.

    Without ``tenant_id`` it covers every tenant (an operator action after Redis lost its data).
    By default a total is only raised, never lowered: requests settled in Redis whose log rows
    are still in a writer's queue keep counting. ``exact=True`` overwrites.
    """
    start, end = month_bounds(month)
    micro = func.sum(func.ceil(InferenceLog.cost_usd * 1_000_000))
    query = (
        select(InferenceLog.tenant_id, InferenceLog.key_id, micro)
        .where(InferenceLog.created_at >= start, InferenceLog.created_at < end)
        .group_by(InferenceLog.tenant_id, InferenceLog.key_id)
    )
    if tenant_id is not None:
        query = query.where(InferenceLog.tenant_id == tenant_id)
    totals: dict[BudgetScope, int] = {}
    for row_tenant, key_id, spent in await session.execute(query):
        amount = int(spent or 0)
        tenant_scope = BudgetScope.for_tenant(row_tenant)
        totals[tenant_scope] = totals.get(tenant_scope, 0) + amount
        if key_id is not None:
            totals[BudgetScope.for_key(row_tenant, key_id)] = amount
    await redis.script_load(SET_SPENT)
    async with redis.pipeline(transaction=False) as pipe:
        for scope, amount in totals.items():
            acct, _, _ = scope.account_keys(month)
            pipe.evalsha(SET_SPENT_SCRIPT.sha, 1, acct, amount, ACCOUNT_TTL_S, int(exact))
        await pipe.execute()
    return len(totals)
