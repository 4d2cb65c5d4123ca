"""Contracts of the evaluation library.

These models are the interface between the metric library (``evals.metrics``, ``evals.judges``,
``evals.ragas``) and the code that runs evaluations (repository, targets, runner, activities).
Model calls reach the library only through the two protocols :class:`LlmCall` and :class:`Embed`,
so tests inject scripted fakes and production injects :func:`evals.llm.provider_llm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


class EvalCase(BaseModel):
    """One golden case of a dataset version."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Stable within a dataset version.")
    input: str = Field(description="Prompt / question; structured inputs as JSON text.")
    expected: str | None = Field(default=None, description="Expected output / reference answer.")
    contexts: list[str] = Field(default_factory=list, description="Reference contexts (RAG).")
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class TargetOutput(BaseModel):
    """What the evaluated target produced for one case."""

    text: str
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    contexts: list[str] = Field(default_factory=list, description="Contexts the target retrieved (RAG).")
    error: str | None = Field(default=None, description="The target failed for this case.")


class MetricSpec(BaseModel):
    """One metric of an eval suite: registry name, parameters and pass threshold."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Metric registry name (see evals.metrics.METRIC_NAMES).")
    params: dict[str, Any] = Field(default_factory=dict)
    pass_threshold: float | None = Field(
        default=None, description="value >= threshold means passed; each metric has a default."
    )


class MetricScore(BaseModel):
    """The score of one metric on one case. ``value`` is None if and only if ``error`` is set."""

    name: str
    value: float | None
    passed: bool | None = None
    error: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    cost_usd: float = 0.0


class LlmReply(BaseModel):
    """A completed (non-streaming) chat call."""

    text: str
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


class LlmCall(Protocol):
    """One chat completion through whatever provider layer the caller injects."""

    async def __call__(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        json_mode: bool = False,
    ) -> LlmReply: ...


class Embed(Protocol):
    """Embeds texts; one vector per text, in order."""

    async def __call__(self, texts: list[str]) -> list[list[float]]: ...


@dataclass
class MetricContext:
    """Model access for metrics that need it (judges, RAGAS, embedding similarity)."""

    llm: LlmCall | None = None
    embed: Embed | None = None
    judge_model: str | None = None  # default judge model when a spec gives none
