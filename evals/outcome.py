"""Internal result types shared by metric implementations (not part of the public contract).

A metric implementation returns :class:`Measured` or raises :class:`MetricFailure`; the
``evals.metrics.score`` entry point turns either into a :class:`~evals.contracts.MetricScore`.
:class:`CostMeter` totals the cost of the model calls a metric makes, so a metric that fails
after paying for some calls still reports what it spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from evals.contracts import Embed, LlmCall, LlmReply


class MetricFailure(Exception):
    """The metric could not produce a value for this case (reported as an error score)."""

    def __init__(self, message: str, *, cost_usd: float = 0.0, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.cost_usd = cost_usd
        self.detail = detail or {}


@dataclass
class Measured:
    """A metric value with its detail and the cost of producing it."""

    value: float
    detail: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0


@dataclass
class CostMeter:
    """Calls the injected model functions and totals their cost."""

    llm: LlmCall | None
    model: str
    cost_usd: float = 0.0
    calls: int = 0

    async def chat(
        self, system: str, user: str, *, max_tokens: int | None = 1024, json_mode: bool = True
    ) -> LlmReply:
        if self.llm is None:
            raise MetricFailure("no LLM is configured for this metric")
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        reply = await self.llm(
            self.model, messages, temperature=0.0, max_tokens=max_tokens, json_mode=json_mode
        )
        self.cost_usd += reply.cost_usd
        self.calls += 1
        return reply

    def fail(self, message: str, **detail: Any) -> MetricFailure:
        """A failure that carries the cost spent so far."""
        return MetricFailure(message, cost_usd=self.cost_usd, detail=detail)


async def embed_texts(embed: Embed | None, texts: list[str]) -> list[list[float]]:
    """Embed ``texts`` checking the embedder returned one vector per text."""
    if embed is None:
        raise MetricFailure("no embedder is configured for this metric")
    vectors = await embed(texts)
    if len(vectors) != len(texts):
        raise MetricFailure(f"the embedder returned {len(vectors)} vectors for {len(texts)} texts")
    return vectors


def cosine(u: list[float], v: list[float]) -> float:
    """Cosine similarity; a failure for zero or mismatched vectors."""
    if len(u) != len(v) or not u:
        raise MetricFailure(f"embedding dimensions differ or are empty ({len(u)} vs {len(v)})")
    dot = math.fsum(x * y for x, y in zip(u, v, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in u)) * math.sqrt(math.fsum(y * y for y in v))
    if norm == 0.0 or not math.isfinite(norm):
        raise MetricFailure("zero-length embedding vector")
    return max(-1.0, min(1.0, dot / norm))
