"""The migrated schema is real Postgres with pgvector and an append-only audit table."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import psql


async def test_pgvector_extension_installed(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        version = await session.scalar(text("SELECT extversion FROM pg_extension WHERE extname='vector'"))
    assert version is not None
    assert version.startswith("0.")


def test_audit_table_refuses_update_delete_truncate(pg_port: int, fresh_database: str) -> None:
    database = fresh_database.rsplit("/", 1)[1]
    inserted = psql(
        pg_port,
        database=database,
        sql="INSERT INTO audit_events (seq, actor, action, target, data, created_at, prev_hash, hash) "
        "VALUES (1, 'test', 'schema.probe', '', '{}', now(), 'x', md5(random()::text)) "
        "ON CONFLICT DO NOTHING",
    )
    assert inserted.returncode == 0, inserted.stderr
    for sql in (
        "UPDATE audit_events SET actor = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ):
        result = psql(pg_port, sql, database=database)
        assert result.returncode != 0, sql
        assert "append-only" in result.stderr
