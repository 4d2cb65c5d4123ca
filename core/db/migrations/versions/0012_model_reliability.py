"""model reliability: consensus_votes, the evidence behind each model's measured reliability

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consensus_votes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=300), nullable=False),
        sa.Column("subtask_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("agreed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workflow_id", "subtask_id", "model", name="uq_consensus_votes_call"),
    )
    op.create_index(
        "ix_consensus_votes_tenant_model", "consensus_votes", ["tenant_id", "model", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_consensus_votes_tenant_model", table_name="consensus_votes")
    op.drop_table("consensus_votes")
