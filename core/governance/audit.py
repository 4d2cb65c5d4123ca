"""The audit trail: one append-only, hash-chained log.

Each event's ``hash`` is SHA-256 over the canonical JSON of its fields plus the previous
event's hash, so changing or removing any event breaks every later link. Appends take a
transaction-scoped advisory lock, so concurrent writers queue instead of forking the chain.
The database refuses UPDATE, DELETE and TRUNCATE on the table (see migration 0001).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import String, bindparam, cast, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import AuditEvent

GENESIS = "0" * 64
# Arbitrary constant naming the audit-append lock among Postgres advisory locks.
AUDIT_LOCK_ID = 0x4E58_4155_4454


def canonical(fields: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def event_fields(
    *,
    seq: int,
    tenant_id: str | None,
    actor: str,
    action: str,
    target: str,
    data: dict[str, Any],
    created_at: dt.datetime,
    prev_hash: str,
) -> dict[str, Any]:
    return {
        "seq": seq,
        "tenant_id": tenant_id,
        "actor": actor,
        "action": action,
        "target": target,
        "data": data,
        "created_at": created_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "prev_hash": prev_hash,
    }


def compute_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(fields)).hexdigest()


def hash_of(event: AuditEvent) -> str:
    """Recompute an event's hash from its stored fields."""
    return compute_hash(
        event_fields(
            seq=event.seq,
            tenant_id=event.tenant_id,
            actor=event.actor,
            action=event.action,
            target=event.target,
            data=event.data,
            created_at=event.created_at,
            prev_hash=event.prev_hash,
        )
    )


async def jsonb_normalized(session: AsyncSession, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` exactly as a JSONB column will give it back, so its hash can be recomputed.

    A Python round-trip is not enough: JSONB re-renders numbers (``1e20`` comes back as the
    integer ``100000000000000000000``, ``-0.0`` as ``0.0``), which would make an untouched
    event look altered. Non-JSON values (datetimes, UUIDs) become strings; NaN is refused.
    """
    as_json = json.dumps(data, default=str, allow_nan=False)
    normalized = await session.scalar(select(cast(bindparam("audit_data", as_json, type_=String), JSONB)))
    if not isinstance(normalized, dict):
        raise TypeError("audit data must be a JSON object")
    return normalized


async def append(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    tenant_id: str | None,
    target: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event inside the caller's transaction (it commits with the caller's change)."""
    clean = await jsonb_normalized(session, data or {})  # before the lock: keep the lock short
    await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": AUDIT_LOCK_ID})
    last = (
        await session.execute(
            select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
        )
    ).first()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    created_at = dt.datetime.now(dt.UTC)
    fields = event_fields(
        seq=seq,
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        target=target,
        data=clean,
        created_at=created_at,
        prev_hash=prev_hash,
    )
    event = AuditEvent(
        seq=seq,
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        target=target,
        data=clean,
        created_at=created_at,
        prev_hash=prev_hash,
        hash=compute_hash(fields),
    )
    session.add(event)
    await session.flush()
    return event
