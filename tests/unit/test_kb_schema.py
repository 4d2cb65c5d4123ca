"""Knowledge-base tables: the migrations match the models, HNSW build parameters included."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import core.db.rag_models  # noqa: F401  (registers the tables on Base.metadata)
from core.db.migrate import alembic_config
from core.db.models import Base
from core.db.rag_models import HNSW_EF_CONSTRUCTION, HNSW_M, KbChunk
from tests.unit.test_gateway_schema import _tables_of

KB_TABLES = {"knowledge_bases", "kb_documents", "kb_chunks"}
INDEX = "ix_kb_chunks_embedding_hnsw"


async def _hnsw_options(url_or_engine: str | AsyncEngine) -> tuple[list[str], bool]:
    engine = create_async_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT c.reloptions, i.indisvalid FROM pg_class c"
                        " JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = :name"
                    ),
                    {"name": INDEX},
                )
            ).one()
            others = await conn.scalar(
                text("SELECT count(*) FROM pg_class WHERE relname LIKE 'ix_kb_chunks_embedding_hnsw_%'")
            )
            assert others == 0  # no leftover of the concurrent rebuild
    finally:
        if isinstance(url_or_engine, str):
            await engine.dispose()
    return sorted(row[0] or []), bool(row[1])


async def test_kb_migrations_match_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diffs = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    assert [d for d in diffs if _tables_of(d) & KB_TABLES] == []


async def test_hnsw_build_parameters_match_the_model(engine: AsyncEngine) -> None:
    (index,) = [i for i in KbChunk.__table__.indexes if i.name == INDEX]
    declared = index.dialect_options["postgresql"]["with"]
    assert declared == {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}
    options, valid = await _hnsw_options(engine)
    assert valid
    assert options == sorted([f"ef_construction={HNSW_EF_CONSTRUCTION}", f"m={HNSW_M}"])
    assert (HNSW_M, HNSW_EF_CONSTRUCTION) != (16, 64)  # denser than pgvector's defaults


def test_hnsw_rebuild_downgrades_and_upgrades(fresh_database: str) -> None:
    command.downgrade(alembic_config(fresh_database), "0008")
    assert asyncio.run(_hnsw_options(fresh_database)) == (["ef_construction=64", "m=16"], True)
    command.upgrade(alembic_config(fresh_database), "head")
    assert asyncio.run(_hnsw_options(fresh_database)) == (
        sorted([f"ef_construction={HNSW_EF_CONSTRUCTION}", f"m={HNSW_M}"]),
        True,
    )
