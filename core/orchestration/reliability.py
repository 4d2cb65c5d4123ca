"""Measured model reliability per tenant: a Beta posterior over graded consensus answers.

Every confident consensus of a NEXUS run grades the answers it saw (``consensus_votes``: agreed
with the accepted answer or not). A model's reliability is the posterior mean of a Beta prior
centred on :data:`~core.orchestration.router.DEFAULT_RELIABILITY` (0.7) and worth
:data:`PRIOR_WEIGHT` observations, over the tenant's gradings of the last
:data:`WINDOW_DAYS` days: ``(0.7·10 + agreed) / (10 + graded)``. An unmeasured model keeps 0.7;
ten agreements out of ten give 0.85. Agreement with the panel is a proxy for accuracy: a model
that errs like the majority is not caught (see ``docs/consensus.md``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.consensus.stats import reliability_mean
from core.db.reliability_models import ConsensusVote
from core.orchestration.progress import ConsensusObservation
from core.orchestration.router import DEFAULT_RELIABILITY

PRIOR_WEIGHT = 10.0
PRIOR = (DEFAULT_RELIABILITY * PRIOR_WEIGHT, (1.0 - DEFAULT_RELIABILITY) * PRIOR_WEIGHT)
WINDOW_DAYS = 90


def reliability_of(agreed: int, disagreed: int) -> float:
    """The Beta(7, 3) posterior mean after ``agreed`` / ``disagreed`` graded answers."""
    return reliability_mean(agreed, disagreed, prior=PRIOR)


class ReliabilityRepository:
    """Tenant-scoped ``consensus_votes``; the caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> ReliabilityRepository:
        return cls(session)

    async def record(
        self, *, tenant_id: str, workflow_id: str, observations: list[ConsensusObservation]
    ) -> None:
        """Store gradings; one already stored for the same (run, subtask, model) is kept."""
        if not observations:
            return
        rows = [
            {
                "tenant_id": tenant_id,
                "workflow_id": workflow_id,
                "subtask_id": o.subtask_id,
                "model": o.model,
                "agreed": o.agreed,
            }
            for o in observations
        ]
        stmt = insert(ConsensusVote).values(rows).on_conflict_do_nothing(constraint="uq_consensus_votes_call")
        await self.session.execute(stmt)

    async def counts(
        self, tenant_id: str, models: Collection[str] | None = None, *, now: dt.datetime | None = None
    ) -> dict[str, tuple[int, int]]:
        """``(agreed, disagreed)`` per model over the window (models without gradings are absent)."""
        since = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=WINDOW_DAYS)
        agreed = func.count().filter(ConsensusVote.agreed)
        query = (
            select(ConsensusVote.model, agreed, func.count())
            .where(ConsensusVote.tenant_id == tenant_id, ConsensusVote.created_at >= since)
            .group_by(ConsensusVote.model)
        )
        if models is not None:
            query = query.where(ConsensusVote.model.in_(list(models)))
        rows = (await self.session.execute(query)).all()
        return {model: (int(yes), int(total) - int(yes)) for model, yes, total in rows}

    async def measured(self, tenant_id: str, models: Collection[str] | None = None) -> dict[str, float]:
        """The measured reliability of every graded model of the tenant (see the module doc)."""
        return reliabilities_from(await self.counts(tenant_id, models))


def reliabilities_from(counts: Mapping[str, tuple[int, int]]) -> dict[str, float]:
    """Reliability per model from ``(agreed, disagreed)`` counts."""
    return {model: reliability_of(yes, no) for model, (yes, no) in counts.items()}
