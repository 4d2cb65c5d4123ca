"""Approval tables: ``approvals``, one row per approval request (the inbox reads it).

The ``Approval`` workflow is the source of truth; its activities keep this row in step
(insert on creation, widen assignees on escalation, final status and decision at the end).
Every write is idempotent: the insert is keyed by ``(tenant_id, id)`` / ``workflow_id``, later
writes only set values.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, Index, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, Timestamp


class Approval(Base):
    """An approval request and, once decided, its decision."""

    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("workflow_id"),
        Index("ix_approvals_tenant_status_created", "tenant_id", "status", "created_at"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(300))
    parent_workflow_id: Mapped[str | None] = mapped_column(String(300))
    title: Mapped[str] = mapped_column(String(300))
    # Markdown, at most 100k characters (enforced by the request contract).
    context: Mapped[str] = mapped_column(Text, default="")
    assignees: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    on_timeout: Mapped[str] = mapped_column(String(16), default="reject")
    requested_by: Mapped[str] = mapped_column(String(200), default="")
    due_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    decided_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
