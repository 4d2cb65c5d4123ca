"""Monthly USD budgets per API key and per tenant, enforced atomically in Redis.

A request *reserves* its estimated cost in every scope (its key and its tenant) in one Lua
script that checks ``spent + reserved + estimate <= limit`` everywhere and reserves in all
scopes or none, so concurrent requests can never overspend. After the call, *settle* replaces
the reservation by the actual cost (idempotent per request id); *release* drops it on failure.
Reservations carry a deadline: a replica that crashed mid-call cannot hold budget forever,
because every later admission in that scope reaps expired reservations first.

Amounts inside Redis are integers of micro-USD; months are ``YYYY-MM`` in UTC, fixed at
admission. Limits live in Postgres (``budgets``) and are cached in Redis for ``LIMIT_TTL_S``.
Spent totals are a cache too: the inference log is the source of truth and
:func:`rebuild_month` recomputes them after Redis lost its data.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Literal

from redis.asyncio import Redis

from core.errors import BadRequest, NexusError, Unavailable
from core.gateway.scripts import (
    ADMIT_SCRIPT,
    COMPLETE_SCRIPT,
    done_key,
    pack,
    tenant_tag,
)

MICRO = Decimal(1_000_000)
LIMIT_TTL_S = 60
RESERVATION_TTL_S = 900
ACCOUNT_TTL_S = 62 * 86_400
DONE_TTL_S = 2 * 86_400
REAP_MAX = 100
UNLIMITED = -1

ScopeType = Literal["key", "tenant"]


class BudgetExceeded(NexusError):
    """The monthly budget of the key or of the tenant cannot cover this request."""

    status, code, title = 402, "budget_exceeded", "Monthly budget exhausted"


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """Who a budget applies to: one API key, or a whole tenant."""

    scope_type: ScopeType
    scope_id: str
    tenant_id: str

    @classmethod
    def for_key(cls, tenant_id: str, key_id: uuid.UUID | str) -> BudgetScope:
        """The scope of one API key of ``tenant_id``."""
        return cls("key", str(key_id), tenant_id)

    @classmethod
    def for_tenant(cls, tenant_id: str) -> BudgetScope:
        """The scope of the whole tenant (all its keys together)."""
        return cls("tenant", tenant_id, tenant_id)

    def _base(self) -> str:
        return f"{tenant_tag(self.tenant_id)}:bud:{self.scope_type}:{self.scope_id}"

    def limit_key(self) -> str:
        """Redis key of the cached limit (micro-USD, ``-1`` = no budget)."""
        return f"{self._base()}:limit"

    def account_keys(self, month: str) -> tuple[str, str, str]:
        """Redis keys of one month: account hash, reservation amounts, reservation deadlines."""
        base = f"{self._base()}:{month}"
        return f"{base}:acct", f"{base}:resv", f"{base}:dl"


@dataclass(frozen=True)
class Reservation:
    """Budget held for one request until it is settled, released or expires."""

    request_id: str
    tenant_id: str
    month: str
    scopes: tuple[BudgetScope, ...]
    estimate_micro: int
    deadline_ms: int

    @property
    def estimate_usd(self) -> Decimal:
        """The reserved amount in USD."""
        return from_micro(self.estimate_micro)


@dataclass(frozen=True)
class BudgetStatus:
    """One scope's month: its limit (None = no budget), settled spend and in-flight reservations."""

    limit_usd: Decimal | None
    spent_usd: Decimal
    reserved_usd: Decimal


LimitLoader = Callable[[Sequence[BudgetScope]], Awaitable[Mapping[BudgetScope, Decimal | None]]]


def to_micro(usd: Decimal) -> int:
    """USD as integer micro-USD (negative counts as 0): rounded as ``Numeric(14, 8)`` stores it, then up."""
    stored = max(usd, Decimal(0)).quantize(Decimal("1e-8"), rounding=ROUND_HALF_UP)
    return int((stored * MICRO).to_integral_value(rounding=ROUND_CEILING))


def from_micro(micro: int) -> Decimal:
    """Integer micro-USD as USD."""
    return Decimal(micro) / MICRO


_current_month: tuple[float, float, str] = (0.0, 0.0, "")  # [start, end) in Unix time, and its key


def month_key(when: dt.datetime | float | None = None) -> str:
    """``YYYY-MM`` in UTC of a datetime or a Unix time (now by default).

    "Now" is answered from the current month's bounds, computed once a month: this runs on
    every gateway call.
    """
    global _current_month
    if when is None:
        now = time.time()
        start, end, key = _current_month
        if start <= now < end:
            return key
        key = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m")
        first, after = month_bounds(key)
        _current_month = (first.timestamp(), after.timestamp(), key)
        return key
    moment = dt.datetime.fromtimestamp(when, dt.UTC) if isinstance(when, float | int) else when
    return moment.astimezone(dt.UTC).strftime("%Y-%m")


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """First instant of ``month`` and of the month after, in UTC."""
    try:
        start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise BadRequest("month must look like YYYY-MM") from exc
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return start, end


async def cache_limits(
    redis: Redis, limits: Mapping[BudgetScope, Decimal | None], ttl_s: int = LIMIT_TTL_S
) -> None:
    """Write limits to the Redis cache in one round trip (None is cached as "no budget")."""
    async with redis.pipeline(transaction=False) as pipe:
        for scope, limit in limits.items():
            value = UNLIMITED if limit is None else to_micro(limit)
            pipe.set(scope.limit_key(), value, ex=ttl_s)
        await pipe.execute()


async def budget_status(redis: Redis, scope: BudgetScope, month: str | None = None) -> BudgetStatus:
    """The cached limit and this month's spend and reservations of one scope (one round trip)."""
    acct, _, _ = scope.account_keys(month or month_key())
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(scope.limit_key())
        pipe.hmget(acct, ["spent", "reserved"])
        limit, (spent, reserved) = await pipe.execute()
    cap = None if limit is None or int(limit) == UNLIMITED else from_micro(int(limit))
    return BudgetStatus(cap, from_micro(int(spent or 0)), from_micro(int(reserved or 0)))


async def execute_admission(
    redis: Redis,
    *,
    tenant_id: str,
    request_id: str,
    scopes: Sequence[BudgetScope],
    estimate_micro: int,
    rate_keys: Sequence[str],
    rate_args: Sequence[int],
    now_ms: int,
    window_ms: int,
    ttl_s: int,
    limits: LimitLoader | None,
) -> tuple[list[int], Reservation]:
    """Run the admission script (rate limits, then budgets); raise :class:`BudgetExceeded`.

    ``rate_args`` holds ``(limit, cost, kind)`` per pair of ``rate_keys`` (kind 1 = requests,
    2 = tokens). Returns the script's answer (code 0 = admitted, 1 = a rate limit refused; the
    caller maps that one) and the reservation. One round trip, plus two when cached limits are
    missing.
    """
    month = month_key(now_ms / 1000)
    deadline = now_ms + ttl_s * 1000
    keys = list(rate_keys)
    for scope in scopes:
        keys.append(scope.limit_key())
        keys.extend(scope.account_keys(month))
    numbers = [now_ms, window_ms, len(rate_args) // 3, len(scopes), *rate_args]
    args = [pack([*numbers, estimate_micro, deadline, ACCOUNT_TTL_S, REAP_MAX]), request_id]
    reservation = Reservation(request_id, tenant_id, month, tuple(scopes), estimate_micro, deadline)
    for _ in range(2):
        result = [int(x) for x in await ADMIT_SCRIPT(redis, keys, args)]
        if result[0] == 2:
            scope = scopes[result[1] - 1]
            raise BudgetExceeded(
                f"the monthly budget of this {'key' if scope.scope_type == 'key' else 'tenant'} is exhausted",
                scope=scope.scope_type,
            )
        if result[0] != 3:
            return result, reservation
        if limits is None:
            break
        wanted = [scopes[i - 1] for i in result[1:]]
        await cache_limits(redis, await limits(wanted))
    raise Unavailable("budget limits are not loaded in Redis")


async def reserve(
    redis: Redis,
    scopes: Sequence[BudgetScope],
    estimate_usd: Decimal,
    request_id: str,
    *,
    limits: LimitLoader | None = None,
    ttl_s: int = RESERVATION_TTL_S,
    now: float | None = None,
) -> Reservation:
    """Reserve ``estimate_usd`` in every scope or in none (one Lua script).

    All scopes must belong to one tenant. Raises :class:`BudgetExceeded` when a scope cannot
    cover it. A repeated call with the same ``request_id`` is a no-op. ``limits`` loads limits
    that are missing from the Redis cache (without it, a miss is :class:`Unavailable`).
    """
    tenants = {s.tenant_id for s in scopes}
    if len(tenants) != 1:
        raise BadRequest("a reservation needs scopes of exactly one tenant")
    now_ms = int((time.time() if now is None else now) * 1000)
    _, reservation = await execute_admission(
        redis,
        tenant_id=tenants.pop(),
        request_id=request_id,
        scopes=scopes,
        estimate_micro=to_micro(estimate_usd),
        rate_keys=(),
        rate_args=(),
        now_ms=now_ms,
        window_ms=60_000,
        ttl_s=ttl_s,
        limits=limits,
    )
    return reservation


def completion_call(
    reservation: Reservation,
    actual_micro: int,
    *,
    token_keys: Sequence[str] = (),
    token_deltas: Sequence[int] = (),
    marker: str = "settled",
) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of the completion script for one request."""
    keys = [done_key(reservation.tenant_id, reservation.request_id), *token_keys]
    for scope in reservation.scopes:
        keys.extend(scope.account_keys(reservation.month))
    numbers = [len(token_keys), len(reservation.scopes), actual_micro, DONE_TTL_S, ACCOUNT_TTL_S]
    return keys, [pack([*numbers, *token_deltas]), reservation.request_id, marker]


async def execute_completion(
    redis: Redis,
    reservation: Reservation,
    actual_micro: int,
    *,
    token_keys: Sequence[str] = (),
    token_deltas: Sequence[int] = (),
    marker: str = "settled",
) -> bool:
    """Run the completion script: token adjustments plus settle; False if already completed."""
    keys, args = completion_call(
        reservation, actual_micro, token_keys=token_keys, token_deltas=token_deltas, marker=marker
    )
    return int(await COMPLETE_SCRIPT(redis, keys, args)) == 1


async def settle(redis: Redis, reservation: Reservation, actual_usd: Decimal) -> bool:
    """Replace the reservation by the actual cost in every scope; a second call counts nothing.

    Returns False when the request was already settled or released. A reservation that expired
    meanwhile is still charged its actual cost (the money was spent).
    """
    return await execute_completion(redis, reservation, to_micro(actual_usd))


async def release(redis: Redis, reservation: Reservation) -> bool:
    """Drop the reservation without charging (the call failed before costing anything)."""
    return await execute_completion(redis, reservation, 0, marker="released")
