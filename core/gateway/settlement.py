"""Settling finished gateway calls in the background, many per Redis round trip.

Every admitted call must be completed once (``core.gateway.limits.complete``): its token
windows corrected and its budget reservation replaced by the actual cost. None of that has to
happen before the client gets its answer: the reservation holds the budget meanwhile. So the
request path only appends to :class:`Settler`'s queue; one background task sends whatever has
accumulated, every ``interval_s`` (20 ms) or as soon as ``max_batch`` calls wait, as one
pipeline of completion scripts (each still atomic and idempotent per request). This costs a
fraction of a round trip per call instead of one task and one round trip each.

A settlement that fails (Redis unreachable) is logged and counted in
``nexus_gateway_settlements_failed_total``; the reservation then expires by itself (see
docs/gateway-limits.md) and the spend is still in the inference log, from which
``rebuild_month`` recomputes the totals. :meth:`Settler.aclose` drains the queue at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from prometheus_client import Counter
from redis.asyncio import Redis

from core.gateway.limits import Admission, complete_many

log = logging.getLogger("nexus.gateway.settlement")

SETTLEMENTS_FAILED = Counter(
    "nexus_gateway_settlements_failed_total",
    "Finished gateway calls whose budget/rate settlement failed (their reservations expire instead)",
)


class Settler:
    """A queue of finished calls and the task that settles them in batches."""

    def __init__(
        self, redis: Redis, *, interval_s: float = 0.02, max_batch: int = 256, timeout_s: float = 5.0
    ) -> None:
        self._redis = redis
        self._interval_s = interval_s
        self._max_batch = max(1, max_batch)
        self._timeout_s = timeout_s
        self._pending: list[tuple[Admission, int, Decimal]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.settled = 0
        self.failed = 0

    def start(self) -> None:
        """Start the background task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-settler")

    def submit(self, admission: Admission, actual_tokens: int, actual_usd: Decimal) -> None:
        """Queue one finished call (never blocks); :meth:`aclose` settles what is left."""
        self._pending.append((admission, actual_tokens, actual_usd))
        if len(self._pending) in (1, self._max_batch):
            self._wake.set()

    @property
    def pending(self) -> int:
        """Calls waiting to be settled."""
        return len(self._pending)

    async def flush(self) -> None:
        """Settle everything queued so far."""
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            await self._settle(batch)

    async def aclose(self) -> None:
        """Stop the task after settling what is queued."""
        self._closed = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self._pending) < self._max_batch and not self._closed:
                await asyncio.sleep(self._interval_s)  # let the batch fill
            try:
                await self.flush()
            except Exception:  # the settler must outlive any bug in one batch
                log.exception("gateway settlement failed")
            if self._closed and not self._pending:
                return

    async def _settle(self, batch: list[tuple[Admission, int, Decimal]]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                results = await complete_many(self._redis, batch)
        except Exception as exc:  # Redis unreachable: the reservations expire by themselves
            results = [exc] * len(batch)
        errors = [r for r in results if isinstance(r, Exception)]
        self.settled += len(batch) - len(errors)
        if errors:
            self.failed += len(errors)
            SETTLEMENTS_FAILED.inc(len(errors))
            log.warning(
                "settling %d of %d gateway calls failed: %s",
                len(errors),
                len(batch),
                type(errors[0]).__name__,
            )
