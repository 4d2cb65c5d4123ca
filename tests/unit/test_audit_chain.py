"""The audit chain against real Postgres: tampering behind the application's back is named.

Every test here damages data, so each runs in its own freshly migrated database
(``fresh_database``), never the shared ``nexus`` database other tests use.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from core.db.engine import make_sessionmaker
from core.db.models import AuditEvent
from core.governance.audit import GENESIS, append, compute_hash, event_fields, hash_of
from core.governance.audit_head import (
    SignedHead,
    export_head,
    load_signing_key,
    public_key_b64,
    verify_against_head,
    verify_head_signature,
)
from core.governance.audit_verify import REASON_ALTERED, REASON_RELINKED, verify_chain
from tests.conftest import psql


@dataclass
class AuditDb:
    sessions: async_sessionmaker[AsyncSession]
    name: str
    port: int

    def tamper(self, sql: str) -> None:
        """Run SQL as the superuser with the append-only triggers switched off."""
        result = psql(
            self.port,
            f"ALTER TABLE audit_events DISABLE TRIGGER USER; {sql}; "
            "ALTER TABLE audit_events ENABLE TRIGGER USER;",
            database=self.name,
        )
        assert result.returncode == 0, result.stderr


@pytest_asyncio.fixture
async def db(fresh_database: str, pg_port: int) -> AsyncIterator[AuditDb]:
    engine = create_async_engine(fresh_database, pool_size=20, max_overflow=0)
    yield AuditDb(make_sessionmaker(engine), fresh_database.rsplit("/", 1)[1], pg_port)
    await engine.dispose()


@pytest.fixture
def seed() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def public_key(seed: str) -> str:
    return public_key_b64(load_signing_key(seed).public_key())


async def add(db: AuditDb, n: int, **data: Any) -> None:
    for i in range(n):
        async with db.sessions() as session, session.begin():
            await append(
                session,
                actor=f"key:{i}",
                action="test.event",
                tenant_id="t-audit" if i % 2 else None,
                target=f"thing/{i}",
                data={"i": i, **data},
            )


async def verify(db: AuditDb, **kwargs: Any) -> Any:
    async with db.sessions() as session, session.begin():
        return await verify_chain(session, **kwargs)


async def test_appended_events_verify_and_hashes_recompute(db: AuditDb) -> None:
    await add(db, 5, text="naïve – ünïcode ✓", nested={"b": [1, 2.5, None], "a": True}, big=1e20, neg=-0.0)
    async with db.sessions() as session:
        events = (await session.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == GENESIS
    for prev, event in zip(events, events[1:], strict=False):
        assert event.prev_hash == prev.hash
    for event in events:
        assert hash_of(event) == event.hash
    result = await verify(db)
    assert result.ok, result.reason
    assert (result.checked, result.head_seq, result.head_hash) == (5, 5, events[-1].hash)
    assert result.first_broken_seq is None


async def test_empty_log_verifies_and_exports_genesis(db: AuditDb, seed: str, public_key: str) -> None:
    async with db.sessions() as session, session.begin():
        result = await verify_chain(session)
        head = await export_head(session, seed)
        against = await verify_against_head(session, head, public_key)
    assert result.ok
    assert result.checked == 0
    assert result.head_seq is None
    assert (head.seq, head.hash, head.created_at) == (0, GENESIS, None)
    assert against.ok, against.reason


async def test_update_behind_the_apps_back_is_named(db: AuditDb) -> None:
    await add(db, 6)
    db.tamper("UPDATE audit_events SET actor = 'key:someone-else' WHERE seq = 3")
    result = await verify(db)
    assert not result.ok
    assert result.first_broken_seq == 3
    assert result.reason == REASON_ALTERED
    assert result.checked == 2
    assert result.head_seq == 6


async def test_rehashed_row_breaks_the_next_link(db: AuditDb) -> None:
    """An attacker who also recomputes the altered row's hash still breaks the following link."""
    await add(db, 5)
    async with db.sessions() as session:
        event = await session.get_one(AuditEvent, 4)
    forged = compute_hash(
        event_fields(
            seq=4,
            tenant_id=event.tenant_id,
            actor="key:forged",
            action=event.action,
            target=event.target,
            data=event.data,
            created_at=event.created_at,
            prev_hash=event.prev_hash,
        )
    )
    db.tamper(f"UPDATE audit_events SET actor = 'key:forged', hash = '{forged}' WHERE seq = 4")
    result = await verify(db)
    assert (result.ok, result.first_broken_seq, result.reason) == (False, 5, REASON_RELINKED)


async def test_deleted_middle_event_is_a_named_gap(db: AuditDb) -> None:
    await add(db, 6)
    db.tamper("DELETE FROM audit_events WHERE seq IN (3, 4)")
    result = await verify(db)
    assert not result.ok
    assert result.first_broken_seq == 3
    assert result.reason == "sequence gap: events 3..4 missing"
    assert result.checked == 2


async def test_deleted_first_event_is_a_gap(db: AuditDb) -> None:
    await add(db, 3)
    db.tamper("DELETE FROM audit_events WHERE seq = 1")
    result = await verify(db)
    assert (result.first_broken_seq, result.reason) == (1, "sequence gap: events 1..1 missing")


async def test_verify_a_range_and_small_batches(db: AuditDb) -> None:
    await add(db, 12)
    result = await verify(db, from_seq=4, to_seq=9, batch_size=2)
    assert result.ok
    assert result.checked == 6
    assert result.head_seq == 9
    assert (await verify(db, batch_size=5)).checked == 12
    db.tamper("UPDATE audit_events SET target = 'x' WHERE seq = 11")
    assert (await verify(db, to_seq=10, batch_size=3)).ok
    broken = await verify(db, from_seq=5, batch_size=3)
    assert (broken.first_broken_seq, broken.checked) == (11, 6)
    with pytest.raises(ValueError, match="from_seq"):
        await verify(db, from_seq=0)


async def test_deleted_tail_is_only_caught_against_an_exported_head(
    db: AuditDb, seed: str, public_key: str
) -> None:
    await add(db, 5)
    async with db.sessions() as session, session.begin():
        head = await export_head(session, seed)
    assert head.seq == 5
    db.tamper("DELETE FROM audit_events WHERE seq >= 4")

    alone = await verify(db)
    assert alone.ok
    assert alone.head_seq == 3

    async with db.sessions() as session, session.begin():
        against = await verify_against_head(session, head, public_key)
    assert not against.ok
    assert against.first_broken_seq == 4
    assert against.reason is not None
    assert "truncated" in against.reason
    assert "4..5" in against.reason


async def test_rewritten_history_is_caught_against_an_exported_head(
    db: AuditDb, seed: str, public_key: str
) -> None:
    """Delete the tail, then append a replacement through the app: the chain is valid again,
    but the exported head's seq now carries a different hash."""
    await add(db, 4)
    async with db.sessions() as session, session.begin():
        head = await export_head(session, seed)
    db.tamper("DELETE FROM audit_events WHERE seq = 4")
    await add(db, 2)
    assert (await verify(db)).ok
    async with db.sessions() as session, session.begin():
        against = await verify_against_head(session, head, public_key)
    assert (against.ok, against.first_broken_seq) == (False, 4)
    assert against.reason is not None
    assert "rewritten" in against.reason


async def test_head_survives_a_json_round_trip_and_later_appends(
    db: AuditDb, seed: str, public_key: str
) -> None:
    await add(db, 3)
    async with db.sessions() as session, session.begin():
        head = await export_head(session, seed)
    stored = SignedHead.model_validate_json(head.model_dump_json())
    await add(db, 2)
    async with db.sessions() as session, session.begin():
        result = await verify_against_head(session, stored, public_key)
    assert result.ok, result.reason
    assert result.head_seq == 5
    assert result.checked == 5


async def test_forged_heads_are_rejected(db: AuditDb, seed: str, public_key: str) -> None:
    await add(db, 3)
    async with db.sessions() as session, session.begin():
        head = await export_head(session, seed)
    assert verify_head_signature(head, public_key) is None

    edited = head.model_copy(update={"seq": 2})
    bad_signature = head.model_copy(update={"signature": base64.b64encode(b"\0" * 64).decode()})
    not_base64 = head.model_copy(update={"signature": "!!!"})
    later = head.model_copy(update={"exported_at": head.exported_at + dt.timedelta(seconds=1)})
    attacker_seed = base64.b64encode(secrets.token_bytes(32)).decode()
    async with db.sessions() as session, session.begin():
        self_signed = await export_head(session, attacker_seed)  # carries the attacker's own key
    cases = [(h, "signature is invalid") for h in (edited, bad_signature, not_base64, later)]
    for forged, reason in [*cases, (self_signed, "signed by another key")]:
        async with db.sessions() as session, session.begin():
            result = await verify_against_head(session, forged, public_key)
        assert not result.ok
        assert result.reason is not None
        assert reason in result.reason


def test_signing_key_errors_do_not_echo_the_seed() -> None:
    for bad in ("not base64 at all!", base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError, match="32-byte") as info:
            load_signing_key(bad)
        assert bad not in str(info.value)


async def test_concurrent_appends_never_fork(db: AuditDb) -> None:
    async def one(i: int) -> int:
        async with db.sessions() as session, session.begin():
            event = await append(session, actor=f"key:{i}", action="test.concurrent", tenant_id=None)
            return event.seq

    seqs = await asyncio.gather(*(one(i) for i in range(100)))
    assert sorted(seqs) == list(range(1, 101))
    async with db.sessions() as session:
        distinct_prev = await session.scalar(select(func.count(func.distinct(AuditEvent.prev_hash))))
        count = await session.scalar(select(func.count()).select_from(AuditEvent))
    assert (count, distinct_prev) == (100, 100)
    result = await verify(db)
    assert result.ok, result.reason
    assert (result.checked, result.head_seq) == (100, 100)
