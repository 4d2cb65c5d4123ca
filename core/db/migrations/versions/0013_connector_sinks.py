"""connector sinks: job sink options and the knowledge-base sink's record → document links

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "connector_jobs",
        sa.Column(
            "sink_options",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.create_table(
        "connector_documents",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("kb_id", sa.UUID(), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("object", sa.String(length=100), nullable=False),
        sa.Column("external_id", sa.String(length=300), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("document_id", sa.UUID(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sync_workflow_id", sa.String(length=300), nullable=False),
        sa.Column("page", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "kb_id", "connection_id", "object", "external_id"),
    )
    op.create_index(
        "ix_connector_documents_page",
        "connector_documents",
        ["tenant_id", "job_id", "sync_workflow_id", "page"],
        unique=False,
    )
    op.create_index(
        "ix_connector_documents_document", "connector_documents", ["tenant_id", "document_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_connector_documents_document", table_name="connector_documents")
    op.drop_index("ix_connector_documents_page", table_name="connector_documents")
    op.drop_table("connector_documents")
    op.drop_column("connector_jobs", "sink_options")
