"""Eval tables: golden datasets with immutable versions, eval runs and their per-case results.

``eval_dataset_versions`` and ``eval_dataset_cases`` are immutable (a trigger refuses UPDATE and
DELETE). ``eval_case_results`` holds one row per (run, case) behind ``UNIQUE(run_id, case_id)``:
the activity that evaluates a case first looks the row up and returns it without calling the
model again, which is what makes "each case evaluated and billed once" hold across retries and
worker crashes (the model calls themselves are billed once in ``model_calls`` by call key).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, Timestamp


class EvalDataset(Base):
    """A tenant's golden dataset; ``latest_version`` is 0 until the first version is added."""

    __tablename__ = "eval_datasets"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class EvalDatasetVersion(Base):
    """One immutable version: its digest (over the ordered case hashes), size and provenance."""

    __tablename__ = "eval_dataset_versions"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "dataset_id"], ["eval_datasets.tenant_id", "eval_datasets.id"]),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    case_count: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(32))  # upload | logs | run
    source_ref: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class EvalDatasetCase(Base):
    """One case of a dataset version (the ``EvalCase`` JSON), in upload order (``position``)."""

    __tablename__ = "eval_dataset_cases"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "dataset_id", "version"],
            [
                "eval_dataset_versions.tenant_id",
                "eval_dataset_versions.dataset_id",
                "eval_dataset_versions.version",
            ],
        ),
        UniqueConstraint("tenant_id", "dataset_id", "version", "position"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    case_hash: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)


class EvalRun(Base):
    """One eval run (its ``id`` is the ``EvalRun`` workflow id; the ``runs`` row shares it)."""

    __tablename__ = "eval_runs"
    __table_args__ = (Index("ix_eval_runs_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    dataset_id: Mapped[str] = mapped_column(String(64))
    dataset_version: Mapped[int] = mapped_column(Integer)
    target: Mapped[dict[str, Any]] = mapped_column(JSONB)
    metrics: Mapped[list[Any]] = mapped_column(JSONB)
    baseline_run_id: Mapped[str | None] = mapped_column(String(300))
    schedule_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32), default="running")
    budget_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    case_count: Mapped[int] = mapped_column(Integer, default=0)
    aggregates: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    regression: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 8), default=Decimal(0))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class EvalCaseResult(Base):
    """The outcome of one case in one run: scores, output claim-check, latency and cost."""

    __tablename__ = "eval_case_results"
    __table_args__ = (UniqueConstraint("run_id", "case_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str] = mapped_column(String(300))
    case_id: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer, default=0)
    scores: Mapped[list[Any]] = mapped_column(JSONB)
    primary_value: Mapped[float | None] = mapped_column(Float)
    passed: Mapped[bool | None] = mapped_column(Boolean)
    output_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    output_preview: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 8), default=Decimal(0))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
