"""``consensus_votes``: how each model's answer compared with an accepted consensus answer.

One row per model per subtask of a NEXUS run whose consensus reached its confidence target:
``agreed`` is whether the model's answer was among the winners. ``UNIQUE(workflow_id,
subtask_id, model)`` makes a retried write a no-op. The rows are the evidence behind each
model's measured reliability (:mod:`core.orchestration.reliability`), per tenant.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Index, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, Timestamp


class ConsensusVote(Base):
    """One model's answer to one subtask, graded against the accepted consensus answer."""

    __tablename__ = "consensus_votes"
    __table_args__ = (
        UniqueConstraint("workflow_id", "subtask_id", "model", name="uq_consensus_votes_call"),
        Index("ix_consensus_votes_tenant_model", "tenant_id", "model", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    workflow_id: Mapped[str] = mapped_column(String(300))
    subtask_id: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    agreed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
