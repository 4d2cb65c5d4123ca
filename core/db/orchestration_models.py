"""Orchestration tables: ``model_calls``, one row per billed model call of a workflow.

``call_key`` is the workflow-assigned, replay-stable key of one call
(``{workflow_id}:{subtask}:{model}:…``) behind a UNIQUE constraint: an activity retry (or a
retry after a worker crash) finds the row and returns the stored answer instead of paying
for the call again. The answer text itself lives in the payload store (``payloads``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, Numeric, String, Text, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, Timestamp


class ModelCall(Base):
    """One finished (billed) model call made by a workflow activity."""

    __tablename__ = "model_calls"
    __table_args__ = (Index("ix_model_calls_tenant_workflow", "tenant_id", "workflow_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    workflow_id: Mapped[str] = mapped_column(String(300))
    call_key: Mapped[str] = mapped_column(String(500), unique=True)
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 8), default=Decimal(0))
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    error: Mapped[str | None] = mapped_column(Text)
    # The answer in the payload store (None for a failed call).
    payload_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
