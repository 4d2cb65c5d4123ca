"""The pipeline definition language: a versioned YAML/JSON document of typed steps.

Only the *shape* lives here (pydantic models; their JSON Schema is published at
``GET /v1/pipelines/schema``). Semantic checks — unknown step references, cycles, variables
that do not exist, expressions that do not parse — are in ``core/pipelines/validate.py`` and
name the offending step.

Templating: string fields may use ``{{ inputs.x }}`` and ``{{ steps.<id>.output.<path> }}``
(a sandboxed Jinja2 environment — no attribute access to Python internals, no eval). Transforms
and branch conditions are JMESPath expressions evaluated over ``{"inputs": …, "steps": …}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.approvals.contracts import Assignees, Escalation, NotifyTarget

STEP_ID = r"^[a-z][a-z0-9_]{0,39}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrySpec(_Strict):
    """Per-step retry policy (Temporal owns the retries)."""

    max_attempts: int = Field(3, ge=1, le=20)
    initial_interval_s: float = Field(1.0, gt=0, le=3600)
    backoff: float = Field(2.0, ge=1, le=10)
    max_interval_s: float = Field(60.0, gt=0, le=86400)
    non_retryable: list[str] = Field(
        default_factory=list, description="Error types that fail the step at once (e.g. bad_request)."
    )


class StepBase(_Strict):
    id: str = Field(pattern=STEP_ID)
    name: str = ""
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout_s: float = Field(300, gt=0, le=86400 * 7)
    compensation: Step | None = Field(
        None,
        description="A step that undoes this one; run (in reverse order) if the run fails or is cancelled.",
    )


class LlmStep(StepBase):
    type: Literal["llm"]
    model: str = Field(description="A catalog model id or route group.")
    prompt: str = Field(min_length=1, max_length=100_000, description="Template.")
    system: str | None = None
    max_tokens: int = Field(512, gt=0, le=8192)
    temperature: float | None = Field(None, ge=0, le=2)
    json_output: bool = False


class NexusStep(StepBase):
    type: Literal["nexus"]
    task: str = Field(min_length=1, description="Template.")
    strategy: str = "adaptive"
    models: list[str] | None = None
    budget_usd: float = Field(0.5, gt=0)


class RagStep(StepBase):
    type: Literal["rag"]
    knowledge_base: str
    query: str = Field(min_length=1, description="Template.")
    top_k: int = Field(5, ge=1, le=50)


class ConnectorStep(StepBase):
    type: Literal["connector"]
    connection: str
    action: str
    input: dict[str, Any] = Field(default_factory=dict, description="Values may be templates.")


class HttpStep(StepBase):
    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = Field(description="http(s) URL; private/link-local targets are refused.")
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    sign_with: str | None = Field(None, description="Name of a configured HMAC secret to sign the body.")


class TransformStep(StepBase):
    type: Literal["transform"]
    expression: str = Field(min_length=1, max_length=10_000, description="JMESPath over {inputs, steps}.")


class ApprovalStep(StepBase):
    type: Literal["approval"]
    title: str = Field(min_length=1, max_length=300, description="Template.")
    context: str = Field("", max_length=100_000, description="Markdown template: what is being decided.")
    assignees: Assignees
    due_in_s: int | None = Field(None, gt=0)
    escalation: Escalation | None = None
    on_timeout: Literal["reject", "approve", "fail"] = "reject"
    notify: list[NotifyTarget] = Field(default_factory=list)


class ParallelStep(StepBase):
    type: Literal["parallel"]
    branches: list[list[Step]] = Field(min_length=1, max_length=50)


class BranchCase(_Strict):
    when: str = Field(description="JMESPath condition over {inputs, steps}; truthy selects the case.")
    steps: list[Step]


class BranchStep(StepBase):
    type: Literal["branch"]
    cases: list[BranchCase] = Field(min_length=1, max_length=20)
    otherwise: list[Step] = Field(default_factory=list)


class WaitStep(StepBase):
    type: Literal["wait"]
    seconds: float | None = Field(None, gt=0, le=86400 * 365)
    until: str | None = Field(None, description="ISO-8601 time (template).")


class SubPipelineStep(StepBase):
    type: Literal["sub_pipeline"]
    pipeline: str = Field(description="Pipeline id of the same tenant.")
    version: int | None = Field(None, ge=1, description="Pinned version; latest at start if omitted.")
    inputs: dict[str, Any] = Field(default_factory=dict)


Step = Annotated[
    LlmStep
    | NexusStep
    | RagStep
    | ConnectorStep
    | HttpStep
    | TransformStep
    | ApprovalStep
    | ParallelStep
    | BranchStep
    | WaitStep
    | SubPipelineStep,
    Field(discriminator="type"),
]


class InputSpec(_Strict):
    type: Literal["string", "number", "integer", "boolean", "object", "array"] = "string"
    required: bool = True
    default: Any = None
    description: str = ""


class PipelineDefinition(_Strict):
    """One immutable version of a pipeline."""

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1, max_length=500)
    outputs: dict[str, str] = Field(
        default_factory=dict, description="Output name -> template or JMESPath (prefix `=`)."
    )


for _model in (
    StepBase,
    LlmStep,
    NexusStep,
    RagStep,
    ConnectorStep,
    HttpStep,
    TransformStep,
    ApprovalStep,
    ParallelStep,
    BranchCase,
    BranchStep,
    WaitStep,
    SubPipelineStep,
):
    _model.model_rebuild()


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of a pipeline definition."""
    return PipelineDefinition.model_json_schema()
