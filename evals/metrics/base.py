"""The metric definition record and the spec error (internal to ``evals.metrics``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from evals.contracts import EvalCase, MetricContext, TargetOutput
from evals.outcome import Measured


class MetricSpecError(ValueError):
    """A metric spec names an unknown metric or has invalid params / threshold."""


class Params(BaseModel):
    """Base of every metric's params model: unknown params are errors."""

    model_config = ConfigDict(extra="forbid")


Scorer = Callable[[Any, EvalCase, TargetOutput, MetricContext], Awaitable[Measured]]


@dataclass(frozen=True)
class MetricDef:
    """How to validate, run and threshold one registry metric."""

    name: str
    params: type[Params]
    scorer: Scorer
    default_threshold: float | None
    needs_llm: bool = False
    needs_embeddings: bool = False
    # latency / cost pass on an upper bound in params, not on value >= threshold
    threshold_allowed: bool = True
