"""What an eval run evaluates (targets) and the contracts of the ``EvalRun`` workflow.

Pure pydantic, no I/O: the API imports these to start runs, the workflow imports them through
``imports_passed_through``. Add fields with defaults only, so running histories stay decodable.

Targets:

* ``model`` — a catalog model with a sandboxed Jinja2 prompt template over the case
  (``{{ input }}``, ``{{ contexts }}``, ``{{ metadata.x }}``, ``{{ tags }}``; never ``expected``),
  called through the provider layer and billed once per case (``model_calls``).
* ``pipeline`` — a pinned pipeline version run as a child ``Pipeline`` workflow per case, the
  case input given as the pipeline input ``input_name``.
* ``nexus`` — a NEXUS configuration run as a child ``Orchestration`` workflow per case.
* ``knowledge_base`` — a knowledge base answering with one model, as
  ``POST /v1/knowledge-bases/{id}/answer`` (mode ``model``) does: hybrid retrieval, then the
  grounded answer (or "not found"); the retrieved chunks are the case's contexts, so the RAGAS
  metrics judge the real retrieval. Runs in the batch activities like ``model``.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field

from core.orchestration.contracts import PayloadRef
from evals.contracts import EvalCase, MetricSpec

WORKFLOW_NAME = "EvalRun"
RUN_KIND = "eval"
SCHEDULE_PREFIX = "evals-schedule"
MAX_TEMPLATE_CHARS = 20_000

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class TemplateError(ValueError):
    """A prompt template does not parse or does not render (the message names no case data)."""


@lru_cache(maxsize=256)
def _template(source: str) -> Any:
    try:
        return _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"prompt template syntax error: {exc.message}") from None


def check_templates(target: BaseModel) -> None:
    """Raise :class:`TemplateError` when a target's templates do not parse (called by the API,
    never inside the workflow sandbox, where Jinja2's compiler may not run)."""
    for name in ("prompt_template", "system_prompt"):
        source = getattr(target, name, None)
        if source is not None:
            _template(source)


def render_prompt(source: str, case: EvalCase) -> str:
    """Render ``source`` over the case (``expected`` is deliberately not visible to the target)."""
    scope = {"input": case.input, "contexts": case.contexts, "metadata": case.metadata, "tags": case.tags}
    try:
        return str(_template(source).render(scope))
    except UndefinedError as exc:
        raise TemplateError(
            f"prompt template refers to something that does not exist: {exc.message}"
        ) from None
    except SecurityError:
        raise TemplateError("prompt template tried an operation the sandbox forbids") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateError(f"prompt template failed: {type(exc).__name__}") from None


class ModelTarget(BaseModel):
    """A model with a prompt template, called through the provider layer."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["model"] = "model"
    model: str = Field(min_length=1, max_length=200, description="Catalog model id.")
    prompt_template: str = Field("{{ input }}", max_length=MAX_TEMPLATE_CHARS)
    system_prompt: str | None = Field(None, max_length=MAX_TEMPLATE_CHARS)
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int | None = Field(512, gt=0, le=32_768)


class PipelineTarget(BaseModel):
    """A pinned pipeline version, one child ``Pipeline`` workflow per case."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["pipeline"] = "pipeline"
    pipeline_id: str = Field(min_length=1, max_length=64)
    version: int | None = Field(None, ge=1, description="Pinned at start (the latest when omitted).")
    input_name: str = Field("input", description="Pipeline input that receives the case input.")
    output: str | None = Field(None, description="Output name to score (default: the only/first output).")


class NexusTarget(BaseModel):
    """A NEXUS configuration, one child ``Orchestration`` workflow per case."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["nexus"] = "nexus"
    models: list[str] | None = Field(None, min_length=1, max_length=9)
    strategy: str = "adaptive"
    skip_planning: bool = True
    budget_usd: Decimal = Field(Decimal("0.50"), gt=0, le=Decimal(100))
    max_tokens: int = Field(512, gt=0, le=8192)
    prompt_template: str = Field("{{ input }}", max_length=MAX_TEMPLATE_CHARS)


class KnowledgeBaseTarget(BaseModel):
    """A knowledge base answering with one model (``POST /v1/knowledge-bases/{id}/answer``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["knowledge_base"] = "knowledge_base"
    knowledge_base_id: str = Field(min_length=1, max_length=64, description="The tenant's knowledge base.")
    model: str = Field(min_length=1, max_length=200, description="The answering catalog model.")
    prompt_template: str = Field(
        "{{ input }}",
        max_length=MAX_TEMPLATE_CHARS,
        description="The question asked, rendered over the case.",
    )
    top_k: int = Field(5, ge=1, le=20, description="Chunks retrieved (hybrid search); the case's contexts.")
    min_score: float | None = Field(
        None, ge=-1, le=1, description="Not-found threshold (default NEXUS_RAG__ANSWER_MIN_SCORE)."
    )
    max_tokens: int = Field(512, ge=1, le=4096)


Target = Annotated[
    ModelTarget | PipelineTarget | NexusTarget | KnowledgeBaseTarget, Field(discriminator="kind")
]


class EvalRunInput(BaseModel):
    """The single argument of the ``EvalRun`` workflow."""

    tenant_id: str
    dataset_id: str
    dataset_version: int
    target: Target
    metrics: list[MetricSpec] = Field(min_length=1)
    primary_metric: str | None = Field(None, description="Metric of regression/A-B tests (default: first).")
    baseline_run_id: str | None = None
    budget_usd: float | None = Field(None, gt=0)
    batch_size: int = Field(20, gt=0, le=500)
    batch_concurrency: int = Field(4, gt=0, le=64)
    case_concurrency: int = Field(8, gt=0, le=256)
    judge_model: str | None = None
    embedding_model: str | None = None
    alpha: float = Field(0.05, gt=0, lt=1)
    min_drop: float = Field(0.0, ge=0)
    alert_channels: list[str] = Field(default_factory=list)
    schedule_id: str | None = None
    created_by: str = ""

    def primary(self) -> str:
        """The primary metric's name."""
        return self.primary_metric or self.metrics[0].name


class EvalStatus:
    """Final statuses of an eval run (``eval_runs.status``)."""

    running = "running"
    completed = "completed"
    budget_exhausted = "budget_exhausted"
    failed = "failed"
    cancelled = "cancelled"


class EvalEvent:
    """Progress event types of an eval run (the SSE ``event:`` field)."""

    started = "run.started"
    progress = "eval.progress"
    budget_exhausted = "eval.budget_exhausted"
    aggregated = "eval.aggregated"
    regressed = "eval.regressed"
    completed = "run.completed"
    failed = "run.failed"
    cancelled = "run.cancelled"


# --- activity contracts ---------------------------------------------------------------------


class PrepareInput(BaseModel):
    """Input of ``eval_prepare``: record the run (idempotent) and list its case ids."""

    workflow_id: str
    run: EvalRunInput


class PrepareResult(BaseModel):
    """The version's case ids in dataset order and a rough per-case cost estimate (budgeting)."""

    case_ids: list[str]
    estimate_per_case_usd: float = 0.0


class CaseSummary(BaseModel):
    """The outcome of one case as the workflow sees it (small: no texts)."""

    case_id: str
    values: dict[str, float | None] = Field(default_factory=dict)
    passed: bool | None = None
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    error: str | None = None
    reused: bool = Field(False, description="The result row existed already (nothing was re-paid).")


class EvaluateBatchInput(BaseModel):
    """Input of ``eval_evaluate_cases``: evaluate (or find) these cases of the run."""

    workflow_id: str
    run: EvalRunInput
    case_ids: list[str]


class CaseOutput(BaseModel):
    """What a child-workflow target produced for one case (scored by ``eval_score_outputs``).

    Either ``text``, or ``ref`` (a payload: text, or JSON from which ``pick`` selects a key).
    """

    case_id: str
    text: str = ""
    ref: PayloadRef | None = None
    pick: str | None = None
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    error: str | None = None


class ScoreOutputsInput(BaseModel):
    """Input of ``eval_score_outputs``: score outputs produced by child workflows."""

    workflow_id: str
    run: EvalRunInput
    outputs: list[CaseOutput]


class CaseInputsInput(BaseModel):
    """Input of ``eval_case_inputs``: the inputs of cases that have no result yet."""

    workflow_id: str
    run: EvalRunInput
    case_ids: list[str]


class CaseInputsResult(BaseModel):
    """Pending cases' rendered inputs (inline, or stored as payloads for NEXUS tasks), and the
    summaries of cases already evaluated."""

    inputs: dict[str, str] = Field(default_factory=dict)
    refs: dict[str, PayloadRef] = Field(default_factory=dict)
    done: list[CaseSummary] = Field(default_factory=list)


class BatchResult(BaseModel):
    """The cases of one batch."""

    cases: list[CaseSummary]

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.cases)


class AggregateInput(BaseModel):
    """Input of ``eval_aggregate``."""

    workflow_id: str
    run: EvalRunInput


class RegressionInput(BaseModel):
    """Input of ``eval_regression``: compare the run with its baseline on the primary metric."""

    workflow_id: str
    run: EvalRunInput


class RegressionResult(BaseModel):
    """The stored verdict (see :func:`evals.stats.regression_verdict`)."""

    regressed: bool
    detail: dict[str, Any] = Field(default_factory=dict)


class AlertInput(BaseModel):
    """Input of ``eval_alert``: tell one operator channel that a run regressed."""

    tenant_id: str
    workflow_id: str
    channel: str
    baseline_run_id: str
    dataset_id: str
    dataset_version: int
    regression: dict[str, Any]
    delivery_id: str


class EvalRunResult(BaseModel):
    """The single result of the ``EvalRun`` workflow."""

    status: str
    evaluated: int = 0
    cost_usd: float = 0.0
    aggregates: dict[str, Any] = Field(default_factory=dict)
    regression: dict[str, Any] | None = None


class FinishEvalInput(BaseModel):
    """Input of ``eval_finish``: the final state of ``eval_runs`` and ``runs`` plus the terminal event."""

    workflow_id: str
    run: EvalRunInput
    status: str
    seq: int
    event: str
    error: str | None = None
    cost_usd: float = 0.0
    evaluated: int = 0
    summary: dict[str, Any] = Field(default_factory=dict)
