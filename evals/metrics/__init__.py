"""The metric registry: validate metric specs and score one case's output.

``score`` never raises for metric-level failures: a failed target, a case without the reference a
metric needs, an unparseable judge reply or a missing model all come back as a
:class:`~evals.contracts.MetricScore` with ``error`` set and ``value``/``passed`` None. It does
raise :class:`MetricSpecError` for a spec that :func:`validate_specs` would reject, and it lets
exceptions from the injected ``LlmCall`` / ``Embed`` (provider errors, timeouts) propagate so the
calling activity can map them to retryable / non-retryable failures.

Pass rule: ``value >= pass_threshold`` (the spec's, else the metric default); ``latency`` and
``cost`` pass when the value is at most ``params.max_ms`` / ``params.max_usd`` (no bound: passed is
None). See docs/evals-metrics.md.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from pydantic import ValidationError

from evals.contracts import EvalCase, MetricContext, MetricScore, MetricSpec, TargetOutput
from evals.metrics import json_schema, llm_metrics, operational, text
from evals.metrics.base import MetricDef, MetricSpecError, Params
from evals.outcome import Measured, MetricFailure

__all__ = [
    "DEFINITIONS",
    "METRIC_NAMES",
    "MetricSpecError",
    "default_threshold",
    "needs_embeddings",
    "needs_llm",
    "score",
    "score_all",
    "validate_specs",
]

_DEFS = (
    MetricDef("exact", text.ExactParams, text.exact, 1.0),
    MetricDef("normalized_match", text.NormalizedParams, text.normalized_match, 1.0),
    MetricDef("bleu", text.BleuParams, text.bleu, 0.5),
    MetricDef("chrf", text.ChrfParams, text.chrf, 0.5),
    MetricDef("rouge1", text.RougeParams, text.rouge1, 0.5),
    MetricDef("rouge2", text.RougeParams, text.rouge2, 0.5),
    MetricDef("rougeL", text.RougeParams, text.rouge_l, 0.5),
    MetricDef(
        "embedding_similarity",
        operational.EmbeddingParams,
        operational.embedding_similarity,
        0.8,
        needs_embeddings=True,
    ),
    MetricDef("json_schema", json_schema.JsonSchemaParams, json_schema.json_schema, 1.0),
    MetricDef("latency", operational.LatencyParams, operational.latency, None, threshold_allowed=False),
    MetricDef("cost", operational.CostParams, operational.cost, None, threshold_allowed=False),
    MetricDef("judge_rubric", llm_metrics.RubricParams, llm_metrics.judge_rubric, 0.75, needs_llm=True),
    MetricDef(
        "judge_reference", llm_metrics.ReferenceParams, llm_metrics.judge_reference, 0.75, needs_llm=True
    ),
    MetricDef("faithfulness", llm_metrics.RagParams, llm_metrics.faithfulness, 0.8, needs_llm=True),
    MetricDef(
        "answer_relevancy",
        llm_metrics.RelevancyParams,
        llm_metrics.answer_relevancy,
        0.7,
        needs_llm=True,
        needs_embeddings=True,
    ),
    MetricDef("context_precision", llm_metrics.RagParams, llm_metrics.context_precision, 0.5, needs_llm=True),
    MetricDef("context_recall", llm_metrics.RagParams, llm_metrics.context_recall, 0.8, needs_llm=True),
)
DEFINITIONS: dict[str, MetricDef] = {d.name: d for d in _DEFS}
METRIC_NAMES: tuple[str, ...] = tuple(DEFINITIONS)


def _definition(spec: MetricSpec) -> MetricDef:
    definition = DEFINITIONS.get(spec.name)
    if definition is None:
        raise MetricSpecError(f"unknown metric {spec.name!r}; known: {', '.join(METRIC_NAMES)}")
    return definition


def _params(definition: MetricDef, spec: MetricSpec) -> Params:
    try:
        params = definition.params.model_validate(spec.params)
    except ValidationError as exc:
        problems = "; ".join(
            f"params.{'.'.join(str(p) for p in err['loc']) or '?'}: {err['msg']}" for err in exc.errors()
        )
        raise MetricSpecError(f"metric {spec.name!r}: {problems}") from None
    if isinstance(params, json_schema.JsonSchemaParams):
        try:
            json_schema.check_schema(params.json_schema)
        except json_schema.SchemaError as exc:
            raise MetricSpecError(f"metric {spec.name!r}: params.schema {exc}") from None
    return params


def _check_threshold(definition: MetricDef, spec: MetricSpec) -> None:
    if spec.pass_threshold is None:
        return
    if not definition.threshold_allowed:
        bound = "max_ms" if definition.name == "latency" else "max_usd"
        raise MetricSpecError(f"metric {spec.name!r}: use params.{bound} instead of pass_threshold")
    if not math.isfinite(spec.pass_threshold):
        raise MetricSpecError(f"metric {spec.name!r}: pass_threshold must be a finite number")


def validate_specs(specs: Sequence[MetricSpec]) -> None:
    """Raise :class:`MetricSpecError` naming the first bad metric, param or threshold."""
    if not specs:
        raise MetricSpecError("at least one metric is required")
    seen: set[str] = set()
    for spec in specs:
        definition = _definition(spec)
        if spec.name in seen:
            raise MetricSpecError(f"metric {spec.name!r} is listed twice")
        seen.add(spec.name)
        _params(definition, spec)
        _check_threshold(definition, spec)


def needs_llm(spec: MetricSpec) -> bool:
    """Whether the metric calls an LLM (judges and RAGAS metrics)."""
    return _definition(spec).needs_llm


def needs_embeddings(spec: MetricSpec) -> bool:
    """Whether the metric calls the embedder."""
    return _definition(spec).needs_embeddings


def default_threshold(name: str) -> float | None:
    """The default pass threshold of metric ``name`` (None for latency / cost)."""
    return DEFINITIONS[name].default_threshold


def _passed(definition: MetricDef, spec: MetricSpec, params: Params, value: float) -> bool | None:
    if isinstance(params, operational.LatencyParams):
        return None if params.max_ms is None else value <= params.max_ms
    if isinstance(params, operational.CostParams):
        return None if params.max_usd is None else value <= params.max_usd
    threshold = spec.pass_threshold if spec.pass_threshold is not None else definition.default_threshold
    return None if threshold is None else value >= threshold


def _error(
    spec: MetricSpec, message: str, *, cost_usd: float = 0.0, detail: dict[str, object] | None = None
) -> MetricScore:
    return MetricScore(
        name=spec.name, value=None, passed=None, error=message, cost_usd=cost_usd, detail=detail or {}
    )


async def score(spec: MetricSpec, case: EvalCase, output: TargetOutput, ctx: MetricContext) -> MetricScore:
    """Score one output with one metric (see the module docstring for what raises)."""
    definition = _definition(spec)
    params = _params(definition, spec)
    _check_threshold(definition, spec)
    if output.error is not None:
        return _error(spec, f"target failed: {output.error}")
    try:
        measured: Measured = await definition.scorer(params, case, output, ctx)
    except MetricFailure as exc:
        return _error(spec, exc.message, cost_usd=exc.cost_usd, detail=exc.detail)
    if not math.isfinite(measured.value):
        return _error(
            spec, f"metric produced a non-finite value ({measured.value})", cost_usd=measured.cost_usd
        )
    return MetricScore(
        name=spec.name,
        value=measured.value,
        passed=_passed(definition, spec, params, measured.value),
        detail=measured.detail,
        cost_usd=measured.cost_usd,
    )


async def score_all(
    specs: Sequence[MetricSpec], case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> list[MetricScore]:
    """All metrics of a suite on one output, concurrently, in spec order.

    Every metric runs to completion; if any raised (an ``LlmCall`` / ``Embed`` exception or an
    invalid spec), the first such exception, in spec order, is re-raised as is (not wrapped in an
    ExceptionGroup), so callers can map provider errors by type.
    """
    results = await asyncio.gather(
        *(score(spec, case, output, ctx) for spec in specs), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if isinstance(result, MetricScore)]
