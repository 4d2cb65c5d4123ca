"""Cost in USD from usage and catalog prices (exact ``Decimal``), and pre-call estimates.

Prices are per million tokens. Cached prompt tokens are billed at the ``cached`` price (the
input price when a model has none); reasoning tokens are part of ``output_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.providers.catalog import ModelEntry, Prices
from core.providers.tokens import count_request, count_text
from core.providers.types import ChatRequest, EmbeddingRequest, Usage

MILLION = Decimal(1_000_000)


def cost_usd(usage: Usage, prices: Prices) -> Decimal:
    """What ``usage`` costs at ``prices``."""
    cached = min(usage.cached_tokens, usage.input_tokens)
    cached_price = prices.cached if prices.cached is not None else prices.input
    total = (
        Decimal(usage.input_tokens - cached) * prices.input
        + Decimal(cached) * cached_price
        + Decimal(usage.output_tokens) * prices.output
    )
    return total / MILLION


@dataclass(frozen=True)
class CostEstimate:
    """A pessimistic pre-call estimate, for reserving budget before the call."""

    prompt_tokens: int
    completion_tokens: int
    usd: Decimal


def completion_budget(req: ChatRequest, model: ModelEntry, default_completion_tokens: int = 1024) -> int:
    """Completion tokens to reserve: ``max_tokens``, else the default capped by the model."""
    if req.max_tokens is not None:
        return req.max_tokens
    cap = model.max_output_tokens or default_completion_tokens
    return min(default_completion_tokens, cap)


def estimate_chat_cost(
    req: ChatRequest, model: ModelEntry, default_completion_tokens: int = 1024
) -> CostEstimate:
    """Prompt tokens counted offline plus the completion budget, priced without cache discount."""
    prompt = count_request(req)
    completion = completion_budget(req, model, default_completion_tokens)
    usd = cost_usd(Usage(input_tokens=prompt, output_tokens=completion), model.prices)
    return CostEstimate(prompt_tokens=prompt, completion_tokens=completion, usd=usd)


def estimate_embedding_cost(req: EmbeddingRequest, model: ModelEntry) -> CostEstimate:
    """Input tokens counted offline, priced at the model's input price."""
    prompt = sum(count_text(text) for text in req.input)
    return CostEstimate(prompt, 0, cost_usd(Usage(input_tokens=prompt), model.prices))
