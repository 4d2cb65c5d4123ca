"""Measured model reliability: which consensus outcomes grade whom, the Beta prior around 0.7,
and the tenant-scoped, idempotent ``consensus_votes`` store behind it (real Postgres)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.db.models import Base
from core.db.reliability_models import ConsensusVote
from core.orchestration.contracts import CandidateRecord, ConsensusRecord, PayloadRef
from core.orchestration.progress import ConsensusObservation, observations_of
from core.orchestration.reliability import WINDOW_DAYS, ReliabilityRepository, reliability_of
from tests.unit.test_gateway_schema import _tables_of

ANSWER = PayloadRef(id="p", sha256="s", size=5, preview="Paris")


def _cands(*models: str, failed: tuple[str, ...] = ()) -> list[CandidateRecord]:
    return [CandidateRecord(model=m, ok=True, answer=ANSWER) for m in models] + [
        CandidateRecord(model=m, ok=False, error="timeout") for m in failed
    ]


def _graded(record: ConsensusRecord, cands: list[CandidateRecord]) -> dict[str, bool]:
    return {o.model: o.agreed for o in observations_of("s1", record, cands)}


def test_an_accepted_majority_grades_winners_and_dissenters_but_not_failures() -> None:
    record = ConsensusRecord(
        strategy="majority", answer=ANSWER, winner_models=["a", "b"], dissent=["c"], failed=["d"]
    )
    assert _graded(record, _cands("a", "b", "c", failed=("d",))) == {"a": True, "b": True, "c": False}


@pytest.mark.parametrize(
    "record",
    [
        ConsensusRecord(strategy="majority", answer=ANSWER, winner_models=["a"], dissent=["b"]),  # a tie
        ConsensusRecord(strategy="majority", answer=ANSWER, winner_models=["a"]),  # one voter
        ConsensusRecord(strategy="weighted", answer=ANSWER, winner_models=["a", "b"], dissent=["c", "d"]),
        ConsensusRecord(strategy="majority", answer=None, winner_models=["a", "b"]),
        ConsensusRecord(strategy="judge", answer=ANSWER, winner_models=["a", "b"], error="bad verdict"),
    ],
)
def test_no_grading_without_a_clear_accepted_answer(record: ConsensusRecord) -> None:
    assert _graded(record, _cands("a", "b", "c", "d")) == {}


def test_the_prior_is_0_7_worth_ten_answers() -> None:
    assert reliability_of(0, 0) == pytest.approx(0.7)
    assert reliability_of(10, 0) == pytest.approx(0.85)
    assert reliability_of(0, 10) == pytest.approx(0.35)
    assert reliability_of(90, 10) == pytest.approx(97 / 110)


async def test_gradings_are_idempotent_tenant_scoped_and_windowed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant, other = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    wid = f"nexus:{tenant}:run1"
    graded = [
        ConsensusObservation(subtask_id="s1", model="m/a", agreed=True),
        ConsensusObservation(subtask_id="s1", model="m/b", agreed=False),
        ConsensusObservation(subtask_id="s2", model="m/a", agreed=True),
    ]
    async with sessions() as session, session.begin():
        repo = ReliabilityRepository.from_session(session)
        for _ in range(2):  # an activity retry writes the same rows again
            await repo.record(tenant_id=tenant, workflow_id=wid, observations=graded)
        await repo.record(
            tenant_id=other,
            workflow_id=f"nexus:{other}:run1",
            observations=[ConsensusObservation(subtask_id="s1", model="m/a", agreed=False)],
        )
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=WINDOW_DAYS + 1)
        await session.execute(
            insert(ConsensusVote).values(
                tenant_id=tenant,
                workflow_id=f"nexus:{tenant}:old",
                subtask_id="s1",
                model="m/b",
                agreed=True,
                created_at=old,
            )
        )
    async with sessions() as session:
        repo = ReliabilityRepository.from_session(session)
        assert await repo.counts(tenant) == {"m/a": (2, 0), "m/b": (0, 1)}
        assert await repo.counts(tenant, ["m/b"]) == {"m/b": (0, 1)}
        measured = await repo.measured(tenant)
    assert measured == {
        "m/a": pytest.approx(reliability_of(2, 0)),
        "m/b": pytest.approx(reliability_of(0, 1)),
    }


async def test_the_migration_matches_the_model(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diffs = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    assert [d for d in diffs if _tables_of(d) & {"consensus_votes"}] == []
