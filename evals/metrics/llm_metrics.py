"""Registry adapters for the model-backed metrics: LLM judges and RAGAS metrics."""

from __future__ import annotations

from pydantic import Field

from evals import judges, rag_metrics
from evals.contracts import EvalCase, MetricContext, TargetOutput
from evals.metrics.base import Params
from evals.outcome import CostMeter, Measured
from evals.rag_metrics import ContextSource


class JudgeParams(Params):
    model: str | None = Field(default=None, min_length=1)  # default: MetricContext.judge_model


class RubricParams(JudgeParams):
    rubric: str = Field(min_length=1, max_length=20_000)
    include_input: bool = True


class ReferenceParams(JudgeParams):
    criteria: str | None = Field(default=None, max_length=20_000)


class RagParams(JudgeParams):
    contexts: ContextSource = "auto"


class RelevancyParams(JudgeParams):
    questions: int = Field(default=3, ge=1, le=10)


def _meter(ctx: MetricContext, model: str | None) -> CostMeter:
    return CostMeter(ctx.llm, judges.judge_model(ctx, model))


async def judge_rubric(
    params: RubricParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> Measured:
    """LLM judge grading against a rubric, 1..5 normalised to 0..1."""
    meter = _meter(ctx, params.model)
    return await judges.grade_rubric(
        case, output, meter, rubric=params.rubric, include_input=params.include_input
    )


async def judge_reference(
    params: ReferenceParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> Measured:
    """LLM judge grading against the expected output, 1..5 normalised to 0..1."""
    meter = _meter(ctx, params.model)
    return await judges.grade_with_reference(case, output, meter, criteria=params.criteria)


async def faithfulness(
    params: RagParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> Measured:
    """RAGAS faithfulness."""
    return await rag_metrics.faithfulness(case, output, _meter(ctx, params.model), params.contexts)


async def answer_relevancy(
    params: RelevancyParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> Measured:
    """RAGAS answer relevancy."""
    return await rag_metrics.answer_relevancy(
        case, output, _meter(ctx, params.model), ctx.embed, params.questions
    )


async def context_precision(
    params: RagParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> Measured:
    """RAGAS context precision (with reference)."""
    return await rag_metrics.context_precision(case, output, _meter(ctx, params.model), params.contexts)


async def context_recall(
    params: RagParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> Measured:
    """RAGAS context recall."""
    return await rag_metrics.context_recall(case, output, _meter(ctx, params.model), params.contexts)
