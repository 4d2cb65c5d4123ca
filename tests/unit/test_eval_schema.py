"""The 0010 migration matches the eval models, and downgrades cleanly to 0009."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

import core.db.eval_models  # noqa: F401  (registers the tables on Base.metadata)
from core.db.migrate import alembic_config
from core.db.models import Base
from tests.unit.test_gateway_schema import _tables, _tables_of

EVAL_TABLES = {
    "eval_datasets",
    "eval_dataset_versions",
    "eval_dataset_cases",
    "eval_runs",
    "eval_case_results",
}


async def test_migration_matches_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diffs = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    assert [d for d in diffs if _tables_of(d) & EVAL_TABLES] == []


def test_downgrade_and_upgrade_again(fresh_database: str) -> None:
    assert EVAL_TABLES <= asyncio.run(_tables(fresh_database))
    command.downgrade(alembic_config(fresh_database), "0009")
    assert not EVAL_TABLES & asyncio.run(_tables(fresh_database))
    command.upgrade(alembic_config(fresh_database), "head")
    assert EVAL_TABLES <= asyncio.run(_tables(fresh_database))
