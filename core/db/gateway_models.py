"""Gateway tables: monthly USD budgets and the inference log (the source of truth for spend)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, Timestamp


class Budget(Base):
    """A monthly USD limit for one API key (``scope_type='key'``) or a whole tenant."""

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("scope_type", "scope_id"),
        CheckConstraint("scope_type IN ('key', 'tenant')", name="ck_budgets_scope_type"),
        CheckConstraint("monthly_limit_usd >= 0", name="ck_budgets_limit_non_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    scope_type: Mapped[str] = mapped_column(String(16))
    # The key's UUID (as text) for key budgets, the tenant id for tenant budgets.
    scope_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    monthly_limit_usd: Mapped[Decimal] = mapped_column(Numeric(14, 6))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class InferenceLog(Base):
    """One gateway call. Written in batches, idempotent on ``request_id``; no foreign keys (hot path)."""

    __tablename__ = "inference_logs"
    __table_args__ = (
        Index("ix_inference_logs_tenant_created", "tenant_id", "created_at"),
        # Month scans across tenants (budget rebuild): BRIN is tiny on an append-only table.
        Index("ix_inference_logs_created_brin", "created_at", postgresql_using="brin"),
        CheckConstraint("status IN ('ok', 'error')", name="ck_inference_logs_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    request_id: Mapped[str] = mapped_column(String(128), unique=True)
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(64))
    route_group: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 8), default=Decimal(0))
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    # Prompt and answer, only when the tenant enabled content logging.
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
