"""Contracts of a NEXUS orchestration run (the ``Orchestration`` workflow): pure pydantic, no I/O.

A run decomposes a task into a plan of subtasks, routes each subtask to a panel of models,
reaches consensus per subtask and synthesises one answer. Large texts (task, candidate answers,
final answer) travel as :class:`PayloadRef` claim-checks into the payload store, so workflow
histories stay small; only short previews are kept inline.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.approvals.contracts import Assignees

WORKFLOW_NAME = "Orchestration"
RUN_KIND = "nexus"
PREVIEW_CHARS = 280
# Who decides a low-confidence subtask unless the run names its reviewers.
DEFAULT_REVIEW_ROLES: tuple[Literal["owner", "admin", "developer", "approver"], ...] = (
    "approver",
    "admin",
    "owner",
)
DEFAULT_REVIEW_DUE_S = 86_400


def default_review_assignees() -> Assignees:
    """The tenant's approvers, admins and owners."""
    return Assignees(roles=list(DEFAULT_REVIEW_ROLES))


class PayloadRef(BaseModel):
    """A claim-check: the id of a text in the payload store (tenant-scoped) and a short preview."""

    id: str
    sha256: str
    size: int
    preview: str = ""


class SubtaskCapability(StrEnum):
    reasoning = "reasoning"
    code = "code"
    math = "math"
    writing = "writing"
    retrieval = "retrieval"
    extraction = "extraction"
    general = "general"


class Subtask(BaseModel):
    """One step of a plan."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,39}$")
    instruction: str = Field(min_length=1, max_length=4000)
    capability: SubtaskCapability = SubtaskCapability.general
    depends_on: list[str] = Field(default_factory=list, max_length=12)
    answer_type: Literal["short", "open"] = Field(
        "open", description="short: a fact/number/label (voted); open: prose (semantic/judge)."
    )


class Plan(BaseModel):
    """A DAG of subtasks (validated: unique ids, known dependencies, no cycles)."""

    model_config = ConfigDict(extra="forbid")

    subtasks: list[Subtask] = Field(min_length=1, max_length=12)

    @model_validator(mode="after")
    def _dag(self) -> Plan:
        ids = [s.id for s in self.subtasks]
        if len(set(ids)) != len(ids):
            raise ValueError("subtask ids must be unique")
        known = set(ids)
        for s in self.subtasks:
            unknown = [d for d in s.depends_on if d not in known]
            if unknown:
                raise ValueError(f"subtask {s.id!r} depends on unknown {unknown}")
            if s.id in s.depends_on:
                raise ValueError(f"subtask {s.id!r} depends on itself")
        # Kahn's algorithm: every subtask must become ready.
        remaining = {s.id: set(s.depends_on) for s in self.subtasks}
        while remaining:
            ready = [i for i, deps in remaining.items() if not deps]
            if not ready:
                raise ValueError(f"the plan has a dependency cycle among {sorted(remaining)}")
            for i in ready:
                del remaining[i]
            for deps in remaining.values():
                deps.difference_update(ready)
        return self

    def layers(self) -> list[list[Subtask]]:
        """Subtasks grouped in dependency order; each layer's subtasks are independent."""
        by_id = {s.id: s for s in self.subtasks}
        done: set[str] = set()
        layers: list[list[Subtask]] = []
        while len(done) < len(by_id):
            layer = [s for s in self.subtasks if s.id not in done and set(s.depends_on) <= done]
            layers.append(layer)
            done.update(s.id for s in layer)
        return layers


class Strategy(StrEnum):
    majority = "majority"
    weighted = "weighted"
    semantic = "semantic"
    judge = "judge"
    moa = "moa"
    adaptive = "adaptive"


class PanelPolicy(BaseModel):
    """How to choose each subtask's panel when the caller does not name models."""

    model_config = ConfigDict(extra="forbid")

    min_models: int = Field(2, ge=1, le=9)
    max_models: int = Field(5, ge=1, le=9)
    prefer: Literal["quality", "cost", "latency"] = "quality"


class OrchestrationInput(BaseModel):
    """The single argument of the ``Orchestration`` workflow."""

    tenant_id: str
    created_by: str
    task: PayloadRef
    plan: Plan | None = None
    skip_planning: bool = False
    strategy: Strategy = Strategy.adaptive
    models: list[str] | None = Field(None, description="Fixed panel (catalog ids) for every subtask.")
    allowed_models: list[str] | None = Field(
        None, description="The models the starting key may use (its scopes); routing never leaves them."
    )
    panel: PanelPolicy = Field(default_factory=PanelPolicy)
    budget_usd: Decimal = Field(Decimal("1.00"), gt=0)
    confidence_target: float = Field(0.8, gt=0, le=1)
    regions: list[str] | None = Field(None, description="Data residency: only models in these regions.")
    human_review_below: float | None = Field(None, ge=0, le=1)
    review_assignees: Assignees = Field(
        default_factory=default_review_assignees,
        description="Who may decide a subtask below human_review_below (default: approver/admin/owner).",
    )
    review_due_in_s: int | None = Field(
        DEFAULT_REVIEW_DUE_S,
        gt=0,
        le=365 * 86_400,
        description="Seconds a review waits before it counts as rejected (None: no due time).",
    )
    planner_model: str | None = None
    synthesizer_model: str | None = None
    judge_model: str | None = None
    embedding_model: str | None = None
    max_tokens: int = Field(512, gt=0, le=8192)
    knowledge_base_ids: list[str] = Field(
        default_factory=list,
        max_length=5,
        description="Knowledge bases of the tenant that ground retrieval subtasks and the plan's root "
        "subtasks (their passages are cited as [K:<chunk id>]).",
    )


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class CandidateRecord(BaseModel):
    """One proposer's answer to one subtask (text in the payload store)."""

    model: str
    provider: str = ""
    ok: bool
    answer: PayloadRef | None = None
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0


class ConsensusRecord(BaseModel):
    strategy: str
    answer: PayloadRef | None = None
    confidence: float = 0.0
    winner_models: list[str] = Field(default_factory=list)
    votes: dict[str, list[str]] = Field(default_factory=dict)
    dissent: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    reasons: str | None = None
    error: str | None = None


class SubtaskStatus(StrEnum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    skipped = "skipped"  # budget exhausted before it ran
    needs_review = "needs_review"


class SubtaskResult(BaseModel):
    subtask_id: str
    status: SubtaskStatus
    panel: list[str] = Field(default_factory=list)
    candidates: list[CandidateRecord] = Field(default_factory=list)
    consensus: ConsensusRecord | None = None
    cost_usd: Decimal = Decimal(0)  # proposers, consensus calls and retrieval
    retrieval_cost_usd: Decimal = Decimal(0)  # the knowledge-base query embeddings (part of cost_usd)


class RunOutcome(StrEnum):
    completed = "completed"
    budget_exhausted = "budget_exhausted"
    failed = "failed"


class KbSource(BaseModel):
    """A knowledge-base chunk shown to a subtask's panel (``label`` is how answers cite it)."""

    label: str
    knowledge_base_id: str
    document_id: str
    document_title: str
    chunk_index: int
    score: float
    cited: bool = False  # the final answer cites its label


class Citation(BaseModel):
    subtask_id: str
    models: list[str]
    sources: list[KbSource] = Field(default_factory=list)


class OrchestrationResult(BaseModel):
    """The single result of the ``Orchestration`` workflow."""

    outcome: RunOutcome
    plan: Plan
    subtasks: list[SubtaskResult]
    answer: PayloadRef | None = None
    confidence: float = 0.0
    citations: list[Citation] = Field(default_factory=list)
    cost_usd: Decimal = Decimal(0)
    cost_by_model: dict[str, Decimal] = Field(default_factory=dict)
    budget_usd: Decimal = Decimal(0)
