"""Admission leases: one Redis round trip admits a batch of one key's calls.

Every gateway call is admitted by one atomic Lua script in Redis (:func:`core.gateway.limits.admit`).
At a few hundred calls per second per key that round trip is most of what the gateway adds to a
call's latency, and most of Redis's load. A :class:`LeaseBook` lets a busy key's calls share it:
when a key has been sending calls steadily, one admission is made for ``n`` calls at once (the
same script, with every request window charged ``n``, every token window ``n`` estimates and
``n`` budget estimates reserved under one lease id), and the next calls of that key in this
process take their share of it locally, with no round trip, until the lease is used up,
``ttl_s`` (0.25 s) has passed, or the minute window it was charged in ends.

What stays exactly as without leases:

- **No limit can be exceeded.** A lease is charged in Redis before any of its calls starts, in
  the same atomic script and against the same limits; a call only runs on a share that was
  charged. Charges land earlier than the calls, never later, so the sliding windows can only
  count a call before it happens.
- **No budget can be overspent.** The lease reserves ``n`` estimates; a call takes its own
  estimate out of that reservation, and a call whose estimate does not fit gets a new lease or an
  exact admission.
- **Small limits are exact.** A lease never takes more than 1/100 of a per-minute limit
  (:data:`LIMIT_SHARE`), and only when the key sent at least ``2 / ttl_s`` calls in the last
  second; otherwise every call is admitted on its own, as before. When Redis refuses a lease
  (a window or budget would be exceeded), the key's calls are admitted one by one for a second,
  so near a limit the answer (including ``Retry-After``) is the exact one.

When a lease ends, it is settled once (:class:`core.gateway.settlement.Settler`): the actual tokens
and cost of its calls replace the estimates, and the requests it did not use are given back to the
window they were charged to. What is different: unused shares count against the key's windows for
at most ``ttl_s``, and the budget shows the lease's reservation until its last call ends. If the
process dies, the lease's reservation expires like any other (docs/gateway-limits.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client import Counter
from redis.asyncio import Redis

from core.errors import RateLimited
from core.gateway.budgets import BudgetExceeded, LimitLoader, to_micro
from core.gateway.limits import WINDOW_MS, Admission, AdmissionRequest, admit
from core.gateway.settlement import Settler

log = logging.getLogger("nexus.gateway.leases")

LEASE_TTL_S = 0.25
LIMIT_SHARE = 100  # a lease takes at most 1/LIMIT_SHARE of a per-minute limit
REFUSED_BACKOFF_S = 1.0  # after Redis refused a lease, the key's calls are admitted one by one
SWEEP_S = 0.05

LEASES = Counter("nexus_gateway_admission_leases_total", "Admission leases taken (one Redis round trip each)")
LEASED_CALLS = Counter(
    "nexus_gateway_leased_calls_total",
    "Gateway calls admitted from a lease (no Redis round trip of their own)",
)


@dataclass(eq=False)
class Lease:
    """``size`` calls of one key admitted at once; see the module docstring."""

    admission: Admission  # the batch admission: its reservation holds the lease's budget
    size: int
    expires_at: float  # wall clock; never past the end of the minute window it was charged in
    requests_left: int
    tokens_left: int
    micro_left: int
    check_tokens: bool
    in_flight: int = 0
    used_requests: int = 0
    used_tokens: int = 0
    used_usd: Decimal = Decimal(0)
    ended: bool = False
    settled: bool = False


Who = tuple[str, str]


class LeaseBook:
    """This process's leases, one current lease per (tenant, key)."""

    def __init__(
        self,
        redis: Redis,
        settler: Settler,
        *,
        max_requests: int = 32,
        ttl_s: float = LEASE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._settler = settler
        self._max = max_requests
        self._ttl_s = ttl_s
        self._clock = clock
        self._current: dict[Who, Lease] = {}
        self._arrivals: dict[Who, list[int]] = {}  # [second, calls in it, calls in the one before]
        self._refused_until: dict[Who, float] = {}
        self._acquiring: dict[Who, asyncio.Task[Lease | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._pruned = 0
        self.acquired = 0
        self.local = 0

    def start(self) -> None:
        """Start the task that ends expired leases (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._sweep_forever(), name="gateway-leases")

    async def aclose(self) -> None:
        """End every lease (settled now, or when its last call ends) and stop the task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for who, lease in list(self._current.items()):
            self._end(who, lease)

    async def admit(self, req: AdmissionRequest, *, limits: LimitLoader | None = None) -> Admission:
        """Admit one call: from the key's lease when it has one (or gets one), else on its own."""
        now = self._clock()
        who = (req.tenant_id, str(req.key_id))
        size = self._lease_size(who, req, now)
        while size >= 2:
            lease = self._current.get(who)
            if lease is not None:
                share = self._take(lease, req, now)
                if share is not None:
                    return share
                self._end(who, lease)
            if self._refused_until.get(who, 0.0) > now:
                break
            pending = self._acquiring.get(who)
            if pending is not None:  # another call is getting a lease: share it rather than race
                with contextlib.suppress(Exception):  # its caller sees the error; this one retries
                    await asyncio.shield(pending)
                now = self._clock()
                continue
            lease = await self._acquire(who, req, size, limits, now)
            share = None if lease is None else self._take(lease, req, now)
            if share is not None:
                return share
            break
        return await admit(self._redis, req, limits=limits, now=now)

    def finish(self, admission: Admission, actual_tokens: int, actual_usd: Decimal) -> None:
        """A call admitted by :meth:`admit` ended: queue its settlement (or its lease's)."""
        lease = admission.lease
        if lease is None:
            self._settler.submit(admission, actual_tokens, actual_usd)
            return
        lease.in_flight -= 1
        lease.used_tokens += max(0, actual_tokens)
        lease.used_usd += actual_usd
        if lease.ended and lease.in_flight == 0:
            self._settle(lease)

    # ------------------------------------------------------------------ internals

    def _lease_size(self, who: Who, req: AdmissionRequest, now: float) -> int:
        """How many calls a new lease for ``who`` may cover (< 2: admit calls one by one)."""
        second = int(now)
        seen = self._arrivals.get(who)
        if seen is None:
            seen = self._arrivals[who] = [second, 0, 0]
        if seen[0] != second:
            seen[2] = seen[1] if seen[0] == second - 1 else 0
            seen[0], seen[1] = second, 0
        seen[1] += 1
        size = min(self._max, int(seen[2] * self._ttl_s))
        if size < 2:
            return 0
        for limit in (req.key_rpm, req.tenant_rpm):
            if limit is not None:
                size = min(size, limit // LIMIT_SHARE)
        tokens = max(1, req.estimated_tokens)
        for limit in (req.key_tpm, req.tenant_tpm):
            if limit is not None:
                size = min(size, limit // (LIMIT_SHARE * tokens))
        return size

    async def _acquire(
        self, who: Who, req: AdmissionRequest, size: int, limits: LimitLoader | None, now: float
    ) -> Lease | None:
        # Its own task: a caller that goes away mid-round-trip must not leave a lease charged in
        # Redis that this process never uses (the lease is still installed for the next calls).
        task = asyncio.ensure_future(self._charge(who, req, size, limits, now))
        self._acquiring[who] = task
        task.add_done_callback(lambda done: self._acquired_done(who, done))
        return await asyncio.shield(task)

    def _acquired_done(self, who: Who, task: asyncio.Task[Lease | None]) -> None:
        if self._acquiring.get(who) is task:
            del self._acquiring[who]
        if not task.cancelled() and task.exception() is not None:
            log.debug("taking an admission lease failed: %s", type(task.exception()).__name__)

    async def _charge(
        self, who: Who, req: AdmissionRequest, size: int, limits: LimitLoader | None, now: float
    ) -> Lease | None:
        batch = dataclasses.replace(
            req,
            request_id=f"lease-{uuid.uuid4().hex}",
            requests=size,
            estimated_tokens=max(0, req.estimated_tokens) * size,
            estimated_usd=req.estimated_usd * size,
        )
        try:
            admission = await admit(self._redis, batch, limits=limits, now=now)
        except (RateLimited, BudgetExceeded):
            # Near a limit: admit one by one for a while, so the caller gets the exact answer.
            self._refused_until[who] = now + REFUSED_BACKOFF_S
            return None
        window_end = (int(now * 1000) // WINDOW_MS + 1) * WINDOW_MS / 1000
        lease = Lease(
            admission=admission,
            size=size,
            expires_at=min(now + self._ttl_s, window_end),
            requests_left=size,
            tokens_left=batch.estimated_tokens,
            micro_left=to_micro(batch.estimated_usd),
            check_tokens=req.key_tpm is not None or req.tenant_tpm is not None,
        )
        old = self._current.get(who)
        if old is not None:
            self._end(who, old)
        self._current[who] = lease
        self.acquired += 1
        LEASES.inc()
        return lease

    def _take(self, lease: Lease, req: AdmissionRequest, now: float) -> Admission | None:
        if lease.ended or now >= lease.expires_at or lease.requests_left < 1:
            return None
        micro = to_micro(req.estimated_usd)
        tokens = max(0, req.estimated_tokens)
        if micro > lease.micro_left or (lease.check_tokens and tokens > lease.tokens_left):
            return None
        lease.requests_left -= 1
        lease.micro_left -= micro
        lease.tokens_left -= tokens
        lease.used_requests += 1
        lease.in_flight += 1
        self.local += 1
        LEASED_CALLS.inc()
        batch = lease.admission
        remaining = batch.remaining_requests
        return Admission(
            request_id=req.request_id,
            tenant_id=req.tenant_id,
            reservation=batch.reservation,
            estimated_tokens=tokens,
            token_buckets=(),
            admitted_at=batch.admitted_at,
            remaining_requests=None if remaining is None else remaining + lease.requests_left,
            remaining_tokens=batch.remaining_tokens,
            lease=lease,
        )

    def _end(self, who: Who, lease: Lease) -> None:
        lease.ended = True
        if self._current.get(who) is lease:
            del self._current[who]
        if lease.in_flight == 0:
            self._settle(lease)

    def _settle(self, lease: Lease) -> None:
        if lease.settled:
            return
        lease.settled = True
        unused = lease.size - lease.used_requests
        adjustments = tuple((key, -unused) for key in lease.admission.request_buckets) if unused else ()
        batch = dataclasses.replace(lease.admission, adjustments=adjustments)
        self._settler.submit(batch, lease.used_tokens, lease.used_usd)

    def sweep(self) -> None:
        """End expired leases and forget idle keys (the background task calls this)."""
        now = self._clock()
        for who, lease in list(self._current.items()):
            if now >= lease.expires_at:
                self._end(who, lease)
        second = int(now)
        if second == self._pruned:
            return
        self._pruned = second  # idle keys are forgotten once a second, not on every sweep
        for who in [w for w, seen in self._arrivals.items() if seen[0] < second - 1]:
            del self._arrivals[who]
        for who in [w for w, until in self._refused_until.items() if until <= now]:
            del self._refused_until[who]

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                self.sweep()
            except Exception:  # the sweeper must outlive any bug in one pass
                log.exception("ending expired admission leases failed")
