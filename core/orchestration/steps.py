"""Inputs and results of the ``Orchestration`` workflow's activities (pure pydantic, no I/O).

Large texts never appear here: prompts, answers and candidate texts travel as
:class:`~core.orchestration.contracts.PayloadRef` claim-checks. Every model call carries a
``call_key`` assigned by the workflow (stable across replays and retries); the activity that
makes the call stores one ``model_calls`` row under it, so a call is billed once.
Add fields with defaults only, so running histories stay decodable.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, Field

from core.orchestration.contracts import (
    CandidateRecord,
    Citation,
    ConsensusRecord,
    KbSource,
    PayloadRef,
    Plan,
    Strategy,
    Subtask,
    Usage,
)
from core.orchestration.progress import CloseRun, RecordProgressInput
from core.providers.catalog import ModelEntry
from core.providers.types import Message, ResponseFormat

DEFAULT_EMBEDDING_MODEL = "sim-openai/text-embedding-3-small"
# Attempts of every model-calling activity (the workflow's retry policy; activities that
# degrade instead of failing the run check it on their last attempt).
LLM_MAX_ATTEMPTS = 3


class OrchestrationEvent(StrEnum):
    """Progress events of an orchestration run (the SSE ``event:`` field)."""

    started = "run.started"
    plan_ready = "plan.ready"
    subtask_started = "subtask.started"
    subtask_finished = "subtask.finished"
    consensus_reached = "consensus.reached"
    approval_requested = "approval.requested"
    budget_exhausted = "budget.exhausted"
    synthesis_delta = "synthesis.delta"
    completed = "run.completed"
    failed = "run.failed"
    cancelled = "run.cancelled"


class CallLlmInput(BaseModel):
    """One chat call: ``messages`` inline (short) or ``messages_ref`` (a JSON list in the store)."""

    tenant_id: str
    workflow_id: str
    call_key: str = Field(min_length=1, max_length=500)
    model: str
    messages: list[Message] | None = None
    messages_ref: PayloadRef | None = None
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    response_format: ResponseFormat | None = None


class CallLlmResult(BaseModel):
    """A finished, billed call; ``replayed`` when it was found in ``model_calls`` (not re-paid)."""

    model: str
    provider: str
    ok: bool = True
    answer: PayloadRef
    usage: Usage = Field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0
    replayed: bool = False


class EmbedInput(BaseModel):
    """Embed stored texts with one embedding model (billed once under ``call_key``)."""

    tenant_id: str
    workflow_id: str
    call_key: str = Field(min_length=1, max_length=500)
    model: str
    texts: list[PayloadRef] = Field(min_length=1)


class EmbedResult(BaseModel):
    model: str
    embeddings: list[list[float]]
    usage: Usage = Field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    replayed: bool = False


class LoadModelsInput(BaseModel):
    """The catalog snapshot a run routes over (taken once, so replays route identically)."""

    tenant_id: str
    allowed: list[str] | None = None  # the starting key's models; None = every callable model


class ModelsSnapshot(BaseModel):
    models: list[ModelEntry]
    # Measured reliability per model of the tenant (graded models only; the rest keep 0.7).
    reliabilities: dict[str, float] = Field(default_factory=dict)


class PlanTaskInput(BaseModel):
    tenant_id: str
    workflow_id: str
    task: PayloadRef
    planner_model: str | None = None
    max_tokens: int = 1024
    skip_planning: bool = Field(False, description="Use the one-step plan without a model call.")


class PlanTaskResult(BaseModel):
    """The validated plan; ``source`` says how it was obtained."""

    plan: Plan
    source: str = Field(description="trivial | planner | repaired | fallback")
    calls: list[CallLlmResult] = Field(default_factory=list)
    error: str | None = None


class PrepareSubtaskInput(BaseModel):
    tenant_id: str
    workflow_id: str
    task: PayloadRef
    subtask: Subtask
    dependency_answers: dict[str, PayloadRef] = Field(default_factory=dict)
    knowledge_base_ids: list[str] = Field(default_factory=list)


class PreparedPrompt(BaseModel):
    """The proposer messages of one subtask (JSON in the store) and their token count, with the
    knowledge-base passages the messages carry (``sources``) and what finding them cost."""

    messages: PayloadRef
    prompt_tokens: int
    sources: list[KbSource] = Field(default_factory=list)
    # The billed query embeddings of the retrieval, by embedding model (a provider model of a
    # knowledge base; the local model is free and absent). Settled in the run's budget.
    retrieval_cost_by_model: dict[str, Decimal] = Field(default_factory=dict)

    @property
    def retrieval_cost_usd(self) -> Decimal:
        """What the retrieval's query embeddings cost in all."""
        return sum(self.retrieval_cost_by_model.values(), Decimal(0))


class ConsensusInput(BaseModel):
    tenant_id: str
    workflow_id: str
    subtask: Subtask
    round: int = 0
    strategy: Strategy
    task: PayloadRef
    candidates: list[CandidateRecord]
    weights: dict[str, float] | None = None
    target_confidence: float = 0.8
    max_models: int = 5
    remaining_budget_usd: Decimal = Decimal(0)
    next_model_cost_usd: Decimal | None = None
    # Adaptive, cost-aware (sequential) scheme: every panel model in preference order with its
    # expected call cost; ``weights`` then holds their reliabilities. None: the Beta rule.
    pool_costs: dict[str, Decimal] | None = None
    judge_model: str | None = None
    embedding_model: str | None = None
    max_tokens: int = 512


class ConsensusResult(BaseModel):
    """The consensus of one round; ``stop`` false = adaptive wants another proposer."""

    record: ConsensusRecord
    stop: bool = True
    reason: str = ""
    calls: list[CallLlmResult] = Field(default_factory=list)
    cost_usd: Decimal = Field(Decimal(0), description="What this round's own model calls cost.")
    ask: list[str] = Field(default_factory=list, description="Sequential scheme: whom to ask next.")


class SynthesizeInput(BaseModel):
    tenant_id: str
    workflow_id: str
    task: PayloadRef
    plan: Plan
    answers: dict[str, PayloadRef]
    models_by_subtask: dict[str, list[str]] = Field(default_factory=dict)
    model: str | None = None
    max_tokens: int = 1024
    # synthesis.delta events are stored under seqs [delta_seq, delta_seq + max_deltas).
    delta_seq: int = 0
    max_deltas: int = 0
    # Progress the workflow queued (events, consensus gradings), stored before the synthesis.
    progress: RecordProgressInput | None = None
    # Batched runs: close the run (runs row + terminal event) once the answer is stored.
    close: CloseRun | None = None


class SynthesizeResult(BaseModel):
    answer: PayloadRef
    citations: list[Citation] = Field(default_factory=list)
    call: CallLlmResult | None = None
