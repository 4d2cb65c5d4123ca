"""knowledge bases: pending embedding model while a ReembedKnowledgeBase run switches models

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "knowledge_bases", sa.Column("pending_embedding_model", sa.String(length=200), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("knowledge_bases", "pending_embedding_model")
