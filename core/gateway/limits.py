"""Gateway admission: request-rate, token-rate and budget checks in ONE Redis round trip.

:func:`admit` runs a single Lua script that checks, for the key and for its tenant, the
requests-per-minute and tokens-per-minute sliding windows (the scheme of
:mod:`core.ratelimit`: the previous minute weighted by its overlap plus the current one), then
the monthly budgets, and charges all of them or none. :func:`complete` is one script too: it
corrects the token windows by ``actual - estimate`` and settles the budget reservation.

Token rate counts input plus output tokens. Admission charges the estimate (prompt tokens
plus the completion budget), so a burst cannot overshoot while calls are in flight; the
correction lands in the minute that was charged (if that minute is still in the window).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from core.errors import RateLimited
from core.gateway.budgets import (
    RESERVATION_TTL_S,
    BudgetScope,
    LimitLoader,
    Reservation,
    completion_call,
    execute_admission,
    to_micro,
)
from core.gateway.scripts import COMPLETE_SCRIPT, retry_after_s, tenant_tag

if TYPE_CHECKING:
    from core.gateway.leases import Lease

WINDOW_MS = 60_000


@dataclass(frozen=True)
class AdmissionRequest:
    """One gateway call asking to start. A limit of None is not enforced (nor counted)."""

    tenant_id: str
    key_id: uuid.UUID | str
    request_id: str
    estimated_tokens: int
    estimated_usd: Decimal
    key_rpm: int | None = None
    tenant_rpm: int | None = None
    key_tpm: int | None = None
    tenant_tpm: int | None = None
    reservation_ttl_s: int = RESERVATION_TTL_S
    # How many requests this admission stands for (a lease admits a batch: core.gateway.leases).
    requests: int = 1

    def scopes(self) -> tuple[BudgetScope, BudgetScope]:
        """The budget scopes every call is charged to: its key, then its tenant."""
        return BudgetScope.for_key(self.tenant_id, self.key_id), BudgetScope.for_tenant(self.tenant_id)


@dataclass(frozen=True)
class Admission:
    """An admitted call: pass it to :func:`complete` exactly once when the call ends."""

    request_id: str
    tenant_id: str
    reservation: Reservation
    estimated_tokens: int
    # Token-rate buckets charged with the estimate, corrected by complete().
    token_buckets: tuple[str, ...]
    admitted_at: dt.datetime
    # For X-RateLimit-Remaining-* headers: the tightest of the key and tenant windows (None = no limit).
    remaining_requests: int | None
    remaining_tokens: int | None
    duplicate: bool = False
    # Request-rate buckets charged (with ``AdmissionRequest.requests``).
    request_buckets: tuple[str, ...] = ()
    # Extra (bucket key, delta) corrections applied at completion (a lease returns unused requests).
    adjustments: tuple[tuple[str, int], ...] = ()
    # The lease this call's share came from (settled through it: core.gateway.leases).
    lease: Lease | None = None


@dataclass(frozen=True)
class _Charge:
    label: str
    kind: str
    limit: int
    cost: int
    current: str
    previous: str


def _charges(req: AdmissionRequest, bucket: int) -> list[_Charge]:
    tag = tenant_tag(req.tenant_id)
    wanted = (
        ("requests per minute for this key", "req", f"key:{req.key_id}", req.key_rpm, req.requests),
        ("requests per minute for this tenant", "req", "tenant", req.tenant_rpm, req.requests),
        ("tokens per minute for this key", "tok", f"key:{req.key_id}", req.key_tpm, req.estimated_tokens),
        ("tokens per minute for this tenant", "tok", "tenant", req.tenant_tpm, req.estimated_tokens),
    )
    return [
        _Charge(
            label,
            kind,
            limit,
            max(0, cost),
            f"{tag}:rl:{kind}:{who}:{bucket}",
            f"{tag}:rl:{kind}:{who}:{bucket - 1}",
        )
        for label, kind, who, limit, cost in wanted
        if limit is not None
    ]


async def admit(
    redis: Redis,
    req: AdmissionRequest,
    *,
    limits: LimitLoader | None = None,
    now: float | None = None,
) -> Admission:
    """Check and charge rate limits and budgets for one call, atomically, in one round trip.

    Raises :class:`core.errors.RateLimited` (with ``retry_after_s``) when a request or token
    window is full, :class:`core.gateway.budgets.BudgetExceeded` when a monthly budget cannot
    cover ``estimated_usd``; nothing is charged then. ``limits`` loads budget limits missing
    from the Redis cache (two extra round trips, once per cache TTL). Re-admitting the same
    ``request_id`` charges nothing again.
    """
    now_s = time.time() if now is None else now
    now_ms = int(now_s * 1000)
    charges = _charges(req, now_ms // WINDOW_MS)
    rate_keys: list[str] = []
    rate_args: list[int] = []
    for charge in charges:
        rate_keys += [charge.current, charge.previous]
        rate_args += [charge.limit, charge.cost, 1 if charge.kind == "req" else 2]
    result, reservation = await execute_admission(
        redis,
        tenant_id=req.tenant_id,
        request_id=req.request_id,
        scopes=req.scopes(),
        estimate_micro=to_micro(req.estimated_usd),
        rate_keys=rate_keys,
        rate_args=rate_args,
        now_ms=now_ms,
        window_ms=WINDOW_MS,
        ttl_s=req.reservation_ttl_s,
        limits=limits,
    )
    if result[0] == 1:
        charge = charges[result[1] - 1]
        retry = retry_after_s(WINDOW_MS, now_ms, result[2], result[3], charge.cost, charge.limit)
        if charge.cost > charge.limit:  # never fits; OpenAI answers such requests 429 as well
            raise RateLimited(
                f"request of about {charge.cost} tokens is larger than the limit of "
                f"{charge.limit} {charge.label}",
                retry_after_s=retry,
            )
        raise RateLimited(f"rate limit of {charge.limit} {charge.label} exceeded", retry_after_s=retry)
    duplicate = result[1] == 1
    return Admission(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        reservation=reservation,
        estimated_tokens=max(0, req.estimated_tokens),
        token_buckets=tuple(c.current for c in charges if c.kind == "tok"),
        request_buckets=tuple(c.current for c in charges if c.kind == "req"),
        admitted_at=dt.datetime.fromtimestamp(now_s, dt.UTC),
        remaining_requests=None if result[2] < 0 else result[2],
        remaining_tokens=None if result[3] < 0 else result[3],
        duplicate=duplicate,
    )


async def complete(redis: Redis, admission: Admission, actual_tokens: int, actual_usd: Decimal) -> bool:
    """Settle an admitted call in one round trip: token windows and budget take the actuals.

    Call it for every admitted call, also failed ones (with whatever usage was billed, 0 and
    ``Decimal(0)`` when nothing was). Idempotent per request: returns False when it already ran.
    """
    keys, args = _completion(admission, actual_tokens, actual_usd)
    return int(await COMPLETE_SCRIPT(redis, keys, args)) == 1


def _completion(admission: Admission, actual_tokens: int, actual_usd: Decimal) -> tuple[list[str], list[str]]:
    delta = max(0, actual_tokens) - admission.estimated_tokens
    return completion_call(
        admission.reservation,
        to_micro(actual_usd),
        token_keys=[*admission.token_buckets, *(key for key, _ in admission.adjustments)],
        token_deltas=[delta] * len(admission.token_buckets) + [d for _, d in admission.adjustments],
    )


async def complete_many(
    redis: Redis, finished: Sequence[tuple[Admission, int, Decimal]]
) -> list[bool | Exception]:
    """:func:`complete` for many calls in one pipelined round trip (each still atomic and idempotent).

    ``finished`` holds ``(admission, actual_tokens, actual_usd)``; returns, per call, whether it
    was applied (False: already completed) or the error it met.
    """
    results = await COMPLETE_SCRIPT.run_many(redis, [_completion(a, t, usd) for a, t, usd in finished])
    return [r if isinstance(r, Exception) else int(r) == 1 for r in results]
