"""The 0002 migration matches the gateway models, and downgrades cleanly."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import core.db.gateway_models  # noqa: F401  (registers the tables on Base.metadata)
from core.db.migrate import alembic_config
from core.db.models import Base

GATEWAY_TABLES = {"budgets", "inference_logs"}


def _tables_of(diff: Any) -> set[str]:
    found: set[str] = set()
    for item in diff if isinstance(diff, list) else [diff]:
        for part in item if isinstance(item, tuple) else (item,):
            table = getattr(part, "table", None)
            name = getattr(table, "name", None) or getattr(part, "name", None)
            if isinstance(name, str):
                found.add(name)
            if isinstance(part, str):
                found.add(part)
    return found


async def test_migration_matches_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diffs = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    ours = [d for d in diffs if _tables_of(d) & GATEWAY_TABLES]
    assert ours == []


async def _tables(url: str) -> set[str]:
    eng = create_async_engine(url)
    async with eng.connect() as conn:
        names = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await eng.dispose()
    return names


def test_downgrade_and_upgrade_again(fresh_database: str) -> None:
    import asyncio

    assert GATEWAY_TABLES <= asyncio.run(_tables(fresh_database))
    command.downgrade(alembic_config(fresh_database), "0001")
    assert not GATEWAY_TABLES & asyncio.run(_tables(fresh_database))
    command.upgrade(alembic_config(fresh_database), "head")
    assert GATEWAY_TABLES <= asyncio.run(_tables(fresh_database))
