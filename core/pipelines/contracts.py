"""Contracts of the ``Pipeline`` workflow and its activities (pure pydantic, no I/O).

The API imports these to start runs; the workflow imports them through
``workflow.unsafe.imports_passed_through()``. Add fields with defaults only.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from core.orchestration.contracts import PayloadRef
from core.pipelines.definition import PipelineDefinition

WORKFLOW_NAME = "Pipeline"
RUN_KIND = "pipeline"
APPROVAL_WORKFLOW = "Approval"
ORCHESTRATION_WORKFLOW = "Orchestration"


class PipelineStatus(StrEnum):
    """How a pipeline run ended (also the ``runs.status`` it leaves)."""

    completed = "completed"
    failed = "failed"  # a step failed for good and nothing had to be undone
    compensated = "compensated"  # a step failed (or the run was cancelled); every undo ran
    compensation_failed = "compensation_failed"  # some undo failed for good: see left_undone
    cancelled = "cancelled"  # cancelled with nothing to undo


class PipelineEvent(StrEnum):
    """Progress events of a pipeline run (the SSE ``event:`` field)."""

    started = "run.started"
    step_started = "step.started"
    step_completed = "step.completed"
    step_failed = "step.failed"
    step_skipped = "step.skipped"
    compensation_started = "compensation.started"
    compensation_completed = "compensation.completed"
    compensation_failed = "compensation.failed"
    run_compensation_failed = "run.compensation_failed"
    completed = "run.completed"
    failed = "run.failed"
    cancelled = "run.cancelled"


class StepOutput(BaseModel):
    """A step's output: inline when small, else a claim-check into the payload store (JSON)."""

    value: Any = None
    ref: PayloadRef | None = None
    reused: bool = Field(False, description="Taken over from an earlier run (retry from failed step).")
    text: bool = Field(False, description="The ref holds plain text (an answer), not JSON.")
    cost_usd: float = 0.0


class RunOptions(BaseModel):
    """How to run: ``resume_from`` re-runs from that top-level step with ``prior_outputs``."""

    resume_from: str | None = None
    prior_outputs: dict[str, StepOutput] = Field(default_factory=dict)
    source_run: str | None = None


class PipelineInput(BaseModel):
    """The single argument of the ``Pipeline`` workflow.

    ``definition`` is inline when small; when None the workflow loads the pinned, immutable
    version from ``pipeline_versions`` through an activity (history keeps only the reference).
    """

    tenant_id: str
    pipeline_id: str
    version: int = Field(ge=1)
    definition: PipelineDefinition | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    options: RunOptions = Field(default_factory=RunOptions)
    created_by: str = ""
    parent_workflow_id: str | None = None


class CompensationOutcome(BaseModel):
    step_id: str
    compensation_id: str
    ok: bool
    error: str | None = None


class PipelineResult(BaseModel):
    """The single result of the ``Pipeline`` workflow (also stored as ``runs.result``)."""

    status: PipelineStatus
    pipeline_id: str
    version: int
    outputs: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, StepOutput] = Field(default_factory=dict)
    failed_step: str | None = None
    error: str | None = None
    compensations: list[CompensationOutcome] = Field(default_factory=list)
    left_undone: list[str] = Field(default_factory=list)


# --- activities ---------------------------------------------------------------------------


class StepContext(BaseModel):
    """What a step's templates see: declared inputs and the outputs of the steps they name."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, StepOutput] = Field(default_factory=dict)
    keys: dict[str, str] = Field(default_factory=dict, description="step id -> its idempotency key")


class EventSeqs(BaseModel):
    """Seqs the workflow reserved for the activity's own ``step.started``/``step.completed``."""

    started: int
    completed: int
    kind: str = "step"  # or "compensation"
    parent: str | None = None


class StepCall(BaseModel):
    """Input of the step activities: the step (JSON form), its context and keys."""

    tenant_id: str
    workflow_id: str
    step: dict[str, Any]
    idempotency_key: str
    context: StepContext = Field(default_factory=StepContext)
    events: EventSeqs | None = None


class BranchChoice(BaseModel):
    """``pipeline_branch``: the index of the first true case, or -1 for ``otherwise``."""

    case: int


class RenderCall(BaseModel):
    """``pipeline_render``: templates to render; ``store`` names results kept in the payload store."""

    tenant_id: str
    workflow_id: str
    idempotency_key: str
    templates: dict[str, Any]
    store: list[str] = Field(default_factory=list)
    context: StepContext = Field(default_factory=StepContext)


class Rendered(BaseModel):
    values: dict[str, Any] = Field(default_factory=dict)
    refs: dict[str, PayloadRef] = Field(default_factory=dict)


class ProgressInput(BaseModel):
    """``pipeline_progress``: one event stored (and the runs row's step progress updated)."""

    tenant_id: str
    workflow_id: str
    seq: int
    type: str
    step_id: str | None = None
    state: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class LoadVersionInput(BaseModel):
    tenant_id: str
    pipeline_id: str
    version: int | None = None


class LoadedVersion(BaseModel):
    version: int
    definition: PipelineDefinition


class OutputsCall(BaseModel):
    """``pipeline_outputs``: evaluate the definition's ``outputs`` over the final context."""

    tenant_id: str
    workflow_id: str
    outputs: dict[str, str]
    context: StepContext
