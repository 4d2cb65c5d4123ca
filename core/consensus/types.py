"""Contracts of the consensus strategies: candidate answers in, one outcome out (pydantic, no I/O)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class CandidateAnswer(BaseModel):
    """One proposer's answer to one question.

    A proposer that failed (error, timeout, refusal to parse) has ``ok=False``; strategies record
    it in :attr:`ConsensusOutcome.failed`, they never drop it silently. An ``ok`` candidate whose
    text is empty after normalisation counts as failed too (it cannot vote).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    text: str | None
    ok: bool = True
    error: str | None = None
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0


class ConsensusOutcome(BaseModel):
    """The result of one consensus strategy over one set of candidates."""

    model_config = ConfigDict(extra="forbid")

    strategy: str
    answer: str
    confidence: float = Field(ge=0.0, le=1.0)
    winner_models: list[str] = Field(default_factory=list)
    votes: dict[str, list[str]] = Field(
        default_factory=dict, description="Normalised answer or cluster label -> models that gave it."
    )
    dissent: list[str] = Field(default_factory=list, description="Valid models whose answer differs.")
    failed: list[str] = Field(default_factory=list, description="Models that failed or gave no answer.")
    reasons: str | None = None
    needs_more: bool = Field(False, description="The candidates did not decide (tie, none valid).")
    error: str | None = None


class AdaptiveDecision(BaseModel):
    """One step of adaptive consensus: stop (and why) or ask one more model."""

    model_config = ConfigDict(extra="forbid")

    stop: bool
    reason: str
    outcome: ConsensusOutcome
    models_used: int = Field(0, description="Candidates considered, failed ones included.")
    cost_usd: Decimal = Field(Decimal(0), description="Sum of the considered candidates' cost.")
