"""Operational metrics (latency, cost) and embedding similarity."""

from __future__ import annotations

from pydantic import Field

from evals.contracts import EvalCase, MetricContext, TargetOutput
from evals.metrics.base import Params
from evals.metrics.text import reference
from evals.outcome import Measured, cosine, embed_texts


class LatencyParams(Params):
    max_ms: float | None = Field(default=None, ge=0)


async def latency(
    params: LatencyParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> Measured:
    """The target's latency in milliseconds (pass: value <= params.max_ms)."""
    return Measured(output.latency_ms)


class CostParams(Params):
    max_usd: float | None = Field(default=None, ge=0)


async def cost(params: CostParams, case: EvalCase, output: TargetOutput, ctx: MetricContext) -> Measured:
    """The target's cost in USD (pass: value <= params.max_usd)."""
    return Measured(output.cost_usd)


class EmbeddingParams(Params):
    pass


async def embedding_similarity(
    params: EmbeddingParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> Measured:
    """Cosine similarity of the embeddings of the output and the expected output (-1..1)."""
    want = reference(case)
    got_vec, want_vec = await embed_texts(ctx.embed, [output.text, want])
    return Measured(cosine(got_vec, want_vec))
