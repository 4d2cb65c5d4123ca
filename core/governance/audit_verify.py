"""Verify the audit chain: recompute every hash and check every link, in seq order.

The log is read in keyset-paginated batches, so a chain of millions of events is verified
in constant memory. Verification stops at the first broken link and names it: an altered
row (its stored hash no longer matches its fields), a broken link (``prev_hash`` differs
from the previous event's hash) or a gap in ``seq`` (events were deleted).

A deleted *tail* leaves a shorter chain that is still internally consistent: only a head
exported earlier (see :mod:`core.governance.audit_head`) can reveal it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import AuditEvent
from core.governance.audit import GENESIS, hash_of

DEFAULT_BATCH = 1000

REASON_ALTERED = "hash mismatch: row altered"
REASON_RELINKED = "prev_hash does not match previous event"


class VerifyResult(BaseModel):
    """Outcome of a chain verification; ``ok=False`` names the first broken ``seq`` and why."""

    ok: bool = Field(description="True when every checked event and link is intact.")
    checked: int = Field(description="Events verified intact before stopping.")
    head_seq: int | None = Field(description="Seq of the last event in the verified range (None if empty).")
    head_hash: str | None = Field(description="Stored hash of that last event.")
    first_broken_seq: int | None = Field(None, description="First seq whose event or link is broken.")
    reason: str | None = Field(None, description="Why verification failed.")


def gap_reason(first_missing: int, last_missing: int) -> str:
    """The reason text for a run of missing sequence numbers."""
    return f"sequence gap: events {first_missing}..{last_missing} missing"


async def iter_events(
    session: AsyncSession, *, from_seq: int, to_seq: int, batch_size: int = DEFAULT_BATCH
) -> AsyncIterator[AuditEvent]:
    """Yield stored events with ``from_seq <= seq <= to_seq`` in seq order, one batch at a time.

    ``populate_existing`` makes every field come from the database, even for an event this
    session already holds, so verification always sees what is stored.
    """
    after = from_seq - 1
    while after < to_seq:
        stmt = (
            select(AuditEvent)
            .where(AuditEvent.seq > after, AuditEvent.seq <= to_seq)
            .order_by(AuditEvent.seq)
            .limit(batch_size)
            .execution_options(populate_existing=True)
        )
        batch = list((await session.scalars(stmt)).all())
        if not batch:
            return
        for event in batch:
            yield event
        after = batch[-1].seq


async def _last_event(session: AsyncSession, to_seq: int | None) -> tuple[int, str] | None:
    stmt = select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    if to_seq is not None:
        stmt = stmt.where(AuditEvent.seq <= to_seq)
    row = (await session.execute(stmt)).first()
    return (row[0], row[1]) if row else None


async def _anchor(session: AsyncSession, from_seq: int) -> str | None:
    """The hash the event at ``from_seq`` must link to; None if unknown (predecessor missing)."""
    if from_seq <= 1:
        return GENESIS
    found: str | None = await session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == from_seq - 1))
    return found


async def verify_chain(
    session: AsyncSession,
    *,
    from_seq: int = 1,
    to_seq: int | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> VerifyResult:
    """Verify events ``from_seq..to_seq`` (default: up to the current last event).

    Each event's hash is recomputed with :func:`hash_of`; each ``prev_hash`` must equal the
    previous event's stored hash (``GENESIS`` for seq 1) and seqs must be contiguous. When
    ``from_seq > 1`` the first event is linked to its stored predecessor. The upper bound is
    fixed when verification starts, so events appended meanwhile are not chased.
    """
    if from_seq < 1:
        raise ValueError("from_seq must be >= 1")
    last = await _last_event(session, to_seq)
    if last is None or last[0] < from_seq:
        return VerifyResult(ok=True, checked=0, head_seq=None, head_hash=None)
    head_seq, head_hash = last
    expected_prev = await _anchor(session, from_seq)
    expected_seq = from_seq
    checked = 0

    def broken(seq: int, reason: str) -> VerifyResult:
        return VerifyResult(
            ok=False,
            checked=checked,
            head_seq=head_seq,
            head_hash=head_hash,
            first_broken_seq=seq,
            reason=reason,
        )

    async for event in iter_events(session, from_seq=from_seq, to_seq=head_seq, batch_size=batch_size):
        if event.seq != expected_seq:
            return broken(expected_seq, gap_reason(expected_seq, event.seq - 1))
        if hash_of(event) != event.hash:
            return broken(event.seq, REASON_ALTERED)
        if expected_prev is not None and event.prev_hash != expected_prev:
            return broken(event.seq, REASON_RELINKED)
        expected_prev = event.hash
        expected_seq += 1
        checked += 1
    if expected_seq <= head_seq:  # rows vanished while we read: report what is missing now
        return broken(expected_seq, gap_reason(expected_seq, head_seq))
    return VerifyResult(ok=True, checked=checked, head_seq=head_seq, head_hash=head_hash)
