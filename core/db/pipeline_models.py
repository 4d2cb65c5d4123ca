"""Pipeline tables: ``pipelines``, their immutable ``pipeline_versions``, and ``pipeline_effects``.

``pipeline_effects`` records each outbound side effect of an ``http`` step under its
idempotency key (``workflow_id:step_id``, or ``workflow_id:comp:step_id`` for an undo) behind
a UNIQUE constraint: an activity retried after the call went out returns the recorded
response instead of calling again (the receiver also gets the key as ``Idempotency-Key``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, Timestamp


class Pipeline(Base):
    """A tenant's pipeline; ``latest_version`` points at its newest immutable version."""

    __tablename__ = "pipelines"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class PipelineVersion(Base):
    """One immutable version: the validated definition and its canonical YAML."""

    __tablename__ = "pipeline_versions"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "pipeline_id"], ["pipelines.tenant_id", "pipelines.id"]),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    canonical_yaml: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class PipelineEffect(Base):
    """One outbound call that went out, recorded under its idempotency key (check-then-act)."""

    __tablename__ = "pipeline_effects"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    workflow_id: Mapped[str] = mapped_column(String(300))
    idempotency_key: Mapped[str] = mapped_column(String(400))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
