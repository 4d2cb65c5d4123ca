"""Run progress recorded in one transaction: a round's events and its consensus evidence.

Newer ``Orchestration`` runs queue their progress events and the grading of each confident
consensus (:class:`ConsensusObservation`) in the workflow and write them in one transaction:
in the ``record_progress`` local activity, or ahead of the synthesis call in the ``synthesize``
activity. Pure pydantic and pure functions (imported by the workflow).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from core.contracts import PublishEventInput
from core.orchestration.contracts import (
    CandidateRecord,
    Citation,
    ConsensusRecord,
    OrchestrationResult,
    PayloadRef,
)


class ConsensusObservation(BaseModel):
    """Whether ``model``'s answer to ``subtask_id`` was among the accepted consensus' winners."""

    subtask_id: str
    model: str
    agreed: bool


class RecordProgressInput(BaseModel):
    """Events (workflow-assigned seqs) and consensus observations of one run, stored together."""

    tenant_id: str
    workflow_id: str
    events: list[PublishEventInput] = Field(default_factory=list)
    observations: list[ConsensusObservation] = Field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.observations)


def observations_of(
    subtask_id: str, record: ConsensusRecord, candidates: list[CandidateRecord]
) -> list[ConsensusObservation]:
    """The grading an accepted consensus gives its proposers: each winner agreed, each dissenter
    did not. Only when at least two models won and they outnumber the dissenters (a lone or
    minority winner grades nobody); failed proposers are not graded (an outage says nothing about
    accuracy)."""
    winners, dissent = set(record.winner_models), set(record.dissent)
    if record.answer is None or record.error or len(winners) < 2 or len(winners) <= len(dissent):
        return []
    return [
        ConsensusObservation(subtask_id=subtask_id, model=c.model, agreed=c.model in winners)
        for c in candidates
        if c.ok and (c.model in winners or c.model in dissent)
    ]


class CloseRun(BaseModel):
    """Batched runs: the ``synthesize`` activity closes the run (``runs`` row and terminal event)
    in its last transaction. ``result`` is the run's result before the synthesis: no answer or
    citations yet, costs without the synthesis call (see :func:`closed_result`)."""

    result: OrchestrationResult
    synthesizer: str | None = None
    terminal_seq: int
    created_by: str
    run_id: str


def closed_result(
    before: OrchestrationResult,
    answer: PayloadRef,
    citations: list[Citation],
    synthesizer: str | None,
    synthesis_cost_usd: Decimal,
) -> OrchestrationResult:
    """The run's result once the synthesis answered (the workflow and the activity agree on it)."""
    by_model = dict(before.cost_by_model)
    if synthesizer is not None:
        by_model[synthesizer] = by_model.get(synthesizer, Decimal(0)) + synthesis_cost_usd
    return before.model_copy(
        update={
            "answer": answer,
            "citations": citations,
            "cost_usd": before.cost_usd + (synthesis_cost_usd if synthesizer is not None else Decimal(0)),
            "cost_by_model": by_model,
        }
    )


def run_summary(result: OrchestrationResult) -> dict[str, Any]:
    """The data of the ``run.completed`` event."""
    return {
        "outcome": result.outcome,
        "confidence": result.confidence,
        "cost_usd": str(result.cost_usd),
        "answer_preview": result.answer.preview if result.answer else None,
    }
