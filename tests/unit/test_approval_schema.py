"""The 0004 migration matches the approval model, and downgrades cleanly to 0003."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

import core.db.approval_models  # noqa: F401  (registers the table on Base.metadata)
from core.db.migrate import alembic_config
from core.db.models import Base
from tests.unit.test_gateway_schema import _tables, _tables_of


async def test_migration_matches_the_model(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diffs = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    assert [d for d in diffs if "approvals" in _tables_of(d)] == []


def test_downgrade_and_upgrade_again(fresh_database: str) -> None:
    assert "approvals" in asyncio.run(_tables(fresh_database))
    command.downgrade(alembic_config(fresh_database), "0003")
    assert "approvals" not in asyncio.run(_tables(fresh_database))
    command.upgrade(alembic_config(fresh_database), "head")
    assert "approvals" in asyncio.run(_tables(fresh_database))
