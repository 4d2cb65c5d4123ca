"""Run progress events: stored in ``run_events`` (the replay log) and fanned out on Redis pub/sub.

``seq`` numbers a workflow's events from 1; it is the SSE event id, so a client resumes with
``Last-Event-ID``. Workflows assign ``seq`` themselves (deterministically), which makes an
activity retry land on the same ``UNIQUE(workflow_id, seq)`` row instead of a duplicate. A retry
may publish a message twice; readers drop anything at or below the last seq they yielded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.contracts import TERMINAL_EVENTS
from core.db.models import RunEvent

log = logging.getLogger("nexus.events")


def channel(workflow_id: str) -> str:
    """Redis pub/sub channel of one run."""
    return f"nexus:events:{workflow_id}"


@dataclass(frozen=True)
class Event:
    """One stored run event, as the SSE endpoint renders it."""

    seq: int
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    def to_json(self) -> str:
        return json.dumps(
            {"seq": self.seq, "type": self.type, "data": self.data, "created_at": self.created_at},
            separators=(",", ":"),
            default=str,
        )

    @classmethod
    def from_row(cls, row: RunEvent) -> Event:
        return cls(seq=row.seq, type=row.type, data=row.data, created_at=_iso(row.created_at))


def _iso(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).isoformat() if value else ""


async def store(
    session: AsyncSession,
    *,
    tenant_id: str,
    workflow_id: str,
    type: str,
    data: dict[str, Any] | None = None,
    seq: int | None = None,
) -> Event:
    """Insert one event in the caller's transaction (no commit, no publish); returns the stored row.

    With ``seq`` given (the workflow's own counter) a repeated call is a no-op on the row, so an
    activity retry never duplicates. Without ``seq`` the next number is taken under a
    per-workflow transaction lock.
    """
    clean: dict[str, Any] = json.loads(json.dumps(data or {}, default=str))
    if seq is None:
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:wid))"), {"wid": workflow_id})
        current = await session.scalar(
            select(func.coalesce(func.max(RunEvent.seq), 0)).where(RunEvent.workflow_id == workflow_id)
        )
        seq = int(current or 0) + 1
    stmt = (
        insert(RunEvent)
        .values(workflow_id=workflow_id, tenant_id=tenant_id, seq=seq, type=type, data=clean)
        .on_conflict_do_nothing(index_elements=["workflow_id", "seq"])
    )
    await session.execute(stmt)
    row = (
        await session.execute(
            select(RunEvent).where(
                RunEvent.workflow_id == workflow_id, RunEvent.tenant_id == tenant_id, RunEvent.seq == seq
            )
        )
    ).scalar_one()
    return Event.from_row(row)


async def store_many(
    session: AsyncSession, *, tenant_id: str, workflow_id: str, events: list[tuple[int, str, dict[str, Any]]]
) -> list[Event]:
    """Insert ``(seq, type, data)`` events of one run in the caller's transaction (two statements
    whatever their number); rows already stored under a seq are kept. Returns the rows, by seq."""
    if not events:
        return []
    rows = [
        {
            "workflow_id": workflow_id,
            "tenant_id": tenant_id,
            "seq": seq,
            "type": type,
            "data": json.loads(json.dumps(data or {}, default=str)),
        }
        for seq, type, data in events
    ]
    stmt = insert(RunEvent).values(rows).on_conflict_do_nothing(index_elements=["workflow_id", "seq"])
    await session.execute(stmt)
    stored = await session.execute(
        select(RunEvent)
        .where(
            RunEvent.workflow_id == workflow_id,
            RunEvent.tenant_id == tenant_id,
            RunEvent.seq.in_([seq for seq, _, _ in events]),
        )
        .order_by(RunEvent.seq)
    )
    return [Event.from_row(r) for r in stored.scalars()]


async def announce(redis: Redis, workflow_id: str, event: Event) -> None:
    """PUBLISH a stored event to live followers (call only after its transaction committed)."""
    await redis.publish(channel(workflow_id), event.to_json())


async def announce_many(redis: Redis, workflow_id: str, events: list[Event]) -> None:
    """PUBLISH stored events in seq order in one round trip (after their transaction committed)."""
    if not events:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.publish(channel(workflow_id), event.to_json())
        await pipe.execute()


async def publish(
    session: AsyncSession,
    redis: Redis,
    *,
    tenant_id: str,
    workflow_id: str,
    type: str,
    data: dict[str, Any] | None = None,
    seq: int | None = None,
) -> int:
    """Store one event (see :func:`store`), commit, then PUBLISH it; returns its seq.

    A retry re-publishes the already stored event (followers drop seqs they have seen), so a
    crash between commit and PUBLISH loses nothing. ``session`` must not be inside a
    caller-managed transaction block: this function commits it.
    """
    event = await store(session, tenant_id=tenant_id, workflow_id=workflow_id, type=type, data=data, seq=seq)
    await session.commit()
    await announce(redis, workflow_id, event)
    return event.seq


async def stored_events(
    session: AsyncSession, *, tenant_id: str, workflow_id: str, after_seq: int = 0, limit: int = 1000
) -> list[Event]:
    """Stored events of one run (tenant-scoped), in seq order, with ``seq > after_seq``."""
    rows = (
        await session.execute(
            select(RunEvent)
            .where(
                RunEvent.tenant_id == tenant_id,
                RunEvent.workflow_id == workflow_id,
                RunEvent.seq > after_seq,
            )
            .order_by(RunEvent.seq)
            .limit(limit)
        )
    ).scalars()
    return [Event.from_row(r) for r in rows]


def _parse(message: Any) -> Event | None:
    try:
        raw = message["data"]
        body = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        return Event(
            seq=int(body["seq"]),
            type=str(body["type"]),
            data=body.get("data") or {},
            created_at=str(body.get("created_at", "")),
        )
    except (KeyError, TypeError, ValueError):
        log.warning("dropping malformed event message")
        return None


async def follow(
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    *,
    tenant_id: str,
    workflow_id: str,
    after_seq: int = 0,
    is_closed: Callable[[], Awaitable[bool]] | None = None,
    idle_s: float = 5.0,
) -> AsyncIterator[Event]:
    """Replay stored events after ``after_seq``, then follow live ones until a terminal event.

    Subscribes before replaying so nothing published in between is lost; gaps in the live
    stream (a missed message) are filled from the table. When nothing arrives for ``idle_s``
    the table is re-read and ``is_closed`` is asked whether the run ended without a terminal
    event (e.g. terminated from the Temporal UI), which also ends the stream.
    """
    last = after_seq
    seen = after_seq  # the highest seq seen live
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel(workflow_id))
    try:

        async def backfill(contiguous: bool = True) -> AsyncIterator[Event]:
            # Parallel activities commit events out of order: while following, stop at the first
            # hole so a late lower seq is not skipped; after an idle period, accept holes.
            nonlocal last
            async with sessions() as session:
                events = await stored_events(
                    session, tenant_id=tenant_id, workflow_id=workflow_id, after_seq=last
                )
            for event in events:
                if contiguous and event.seq != last + 1:
                    return
                last = event.seq
                yield event

        async for event in backfill():
            yield event
            if event.terminal:
                return
        if is_closed is not None and await is_closed():
            async for event in backfill(contiguous=False):
                yield event
            return
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=idle_s)
            if message is None:
                async for event in backfill(contiguous=False):
                    yield event
                    if event.terminal:
                        return
                if is_closed is not None and await is_closed():
                    return
                continue
            live = _parse(message)
            if live is None or live.seq <= last:
                continue
            seen = max(seen, live.seq)
            if live.seq > last + 1:
                async for event in backfill():
                    yield event
                    if event.terminal:
                        return
                continue
            last = live.seq
            yield live
            if live.terminal:
                return
            if seen > last:  # later events already went by live: take them from the table
                async for event in backfill():
                    yield event
                    if event.terminal:
                        return
    finally:
        try:
            await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
        except Exception:  # closing a dead connection must not mask the stream's own outcome
            log.debug("pubsub close failed", exc_info=True)
