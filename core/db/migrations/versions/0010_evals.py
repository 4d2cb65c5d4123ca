"""evals: datasets, dataset versions (immutable) and cases, eval runs and case results

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_NOW = sa.text("now()")


def _ts(name: str, nullable: bool = False, default: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=_NOW if default else None, nullable=nullable
    )


def upgrade() -> None:
    op.create_table(
        "eval_datasets",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
    )
    op.create_table(
        "eval_dataset_versions",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("case_count", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("source_ref", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _ts("created_at"),
        sa.ForeignKeyConstraint(["tenant_id", "dataset_id"], ["eval_datasets.tenant_id", "eval_datasets.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "dataset_id", "version"),
    )
    op.create_table(
        "eval_dataset_cases",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("case_hash", sa.String(length=64), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "dataset_id", "version"],
            [
                "eval_dataset_versions.tenant_id",
                "eval_dataset_versions.dataset_id",
                "eval_dataset_versions.version",
            ],
        ),
        sa.PrimaryKeyConstraint("tenant_id", "dataset_id", "version", "case_id"),
        sa.UniqueConstraint("tenant_id", "dataset_id", "version", "position"),
    )
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(length=300), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_version", sa.Integer(), nullable=False),
        sa.Column("target", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("baseline_run_id", sa.String(length=300), nullable=True),
        sa.Column("schedule_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("budget_usd", sa.Numeric(precision=14, scale=6), nullable=True),
        sa.Column("case_count", sa.Integer(), nullable=False),
        sa.Column("aggregates", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("regression", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("cost_usd", sa.Numeric(precision=14, scale=8), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _ts("created_at"),
        _ts("finished_at", nullable=True, default=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_eval_runs_tenant_created", "eval_runs", ["tenant_id", "created_at"], unique=False)
    op.create_table(
        "eval_case_results",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=300), nullable=False),
        sa.Column("case_id", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("scores", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("primary_value", sa.Float(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("output_id", postgresql.UUID(), nullable=True),
        sa.Column("output_preview", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(precision=14, scale=8), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "case_id"),
    )
    op.create_index("ix_eval_case_results_tenant_id", "eval_case_results", ["tenant_id"], unique=False)
    # Dataset versions and their cases are immutable: refuse UPDATE and DELETE at the database.
    op.execute(
        """
        CREATE FUNCTION eval_datasets_immutable() RETURNS trigger AS $$
        BEGIN
            RAISE EXCEPTION 'dataset versions are immutable';
        END;
        $$ LANGUAGE plpgsql;
        """
    )
    for table in ("eval_dataset_versions", "eval_dataset_cases"):
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION eval_datasets_immutable()"
        )


def downgrade() -> None:
    for table in ("eval_dataset_versions", "eval_dataset_cases"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
    op.execute("DROP FUNCTION IF EXISTS eval_datasets_immutable()")
    op.drop_index("ix_eval_case_results_tenant_id", table_name="eval_case_results")
    op.drop_table("eval_case_results")
    op.drop_index("ix_eval_runs_tenant_created", table_name="eval_runs")
    op.drop_table("eval_runs")
    op.drop_table("eval_dataset_cases")
    op.drop_table("eval_dataset_versions")
    op.drop_table("eval_datasets")
