"""connectors: connections, connector jobs, checkpoints and synced records

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_NOW = sa.text("now()")


def _ts(name: str, nullable: bool = False, default: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=_NOW if default else None, nullable=nullable
    )


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("credentials_key_id", sa.String(length=64), nullable=False),
        sa.Column("credentials_nonce", sa.LargeBinary(), nullable=False),
        sa.Column("credentials_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "name"),
    )
    op.create_table(
        "connector_jobs",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("object", sa.String(length=100), nullable=False),
        sa.Column("sink_type", sa.String(length=32), nullable=False),
        sa.Column("sink_target", sa.String(length=200), nullable=False),
        sa.Column("page_size", sa.Integer(), nullable=False),
        sa.Column("max_pages_per_minute", sa.Integer(), nullable=True),
        sa.Column("schedule", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("last_workflow_id", sa.String(length=300), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("runs_started", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(["tenant_id", "connection_id"], ["connections.tenant_id", "connections.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
    )
    op.create_index(
        "ix_connector_jobs_tenant_created", "connector_jobs", ["tenant_id", "created_at"], unique=False
    )
    op.create_table(
        "connector_checkpoints",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("checkpoint", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("pages_done", sa.BigInteger(), nullable=False),
        sa.Column("records_written", sa.BigInteger(), nullable=False),
        sa.Column("has_more", sa.Boolean(), nullable=False),
        sa.Column("last_page_records", sa.Integer(), nullable=False),
        sa.Column("owner_workflow_id", sa.String(length=300), nullable=True),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(["tenant_id", "job_id"], ["connector_jobs.tenant_id", "connector_jobs.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "job_id"),
    )
    op.create_table(
        "connector_records",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("object", sa.String(length=100), nullable=False),
        sa.Column("external_id", sa.String(length=300), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("writes", sa.Integer(), nullable=False),
        _ts("synced_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "connection_id", "object", "external_id"),
    )
    op.create_index("ix_connector_records_job", "connector_records", ["tenant_id", "job_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_connector_records_job", table_name="connector_records")
    op.drop_table("connector_records")
    op.drop_table("connector_checkpoints")
    op.drop_index("ix_connector_jobs_tenant_created", table_name="connector_jobs")
    op.drop_table("connector_jobs")
    op.drop_table("connections")
