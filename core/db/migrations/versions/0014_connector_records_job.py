"""connector records per job: which jobs wrote a synced record, and the records sinks skipped

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connector_record_jobs",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("object", sa.String(length=100), nullable=False),
        sa.Column("external_id", sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "job_id", "connection_id", "object", "external_id"),
    )
    # Rows synced before this revision belong to the job that wrote them last.
    op.execute(
        "INSERT INTO connector_record_jobs (tenant_id, job_id, connection_id, object, external_id) "
        "SELECT tenant_id, job_id, connection_id, object, external_id FROM connector_records "
        "ON CONFLICT DO NOTHING"
    )
    op.add_column(
        "connector_checkpoints",
        sa.Column("records_skipped", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "connector_checkpoints",
        sa.Column(
            "skipped",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("connector_checkpoints", "skipped")
    op.drop_column("connector_checkpoints", "records_skipped")
    op.drop_table("connector_record_jobs")
