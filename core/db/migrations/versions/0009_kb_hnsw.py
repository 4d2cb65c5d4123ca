"""knowledge bases: rebuild the HNSW index with denser build parameters

The vector index of ``kb_chunks`` was built with pgvector's defaults (m=16, ef_construction=64);
bench/knowledge.py measured recall@10 below the 0.95 target at 100k chunks with them. This
rebuilds it with m=32, ef_construction=200 (see bench/RESULTS.md, "Knowledge bases").

The new index is built ``CONCURRENTLY`` under a temporary name while the old one keeps serving
queries and writes, then swapped in (drop the old one concurrently, rename), so upgrading a
large knowledge base never blocks ingestion or search. ``CONCURRENTLY`` cannot run inside a
transaction: the statements run in an autocommit block. An index left INVALID by an interrupted
earlier attempt is dropped first. The build is faster when the graph fits in
``maintenance_work_mem`` (pgvector logs a notice when it does not).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

INDEX = "ix_kb_chunks_embedding_hnsw"
NEW = "ix_kb_chunks_embedding_hnsw_rebuild"


def _rebuild(m: int, ef_construction: int) -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NEW}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {NEW} ON kb_chunks USING hnsw (embedding vector_cosine_ops)"
            f" WITH (m = {m}, ef_construction = {ef_construction})"
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(f"ALTER INDEX {NEW} RENAME TO {INDEX}")


def upgrade() -> None:
    _rebuild(32, 200)


def downgrade() -> None:
    _rebuild(16, 64)
