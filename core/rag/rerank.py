"""Rerank with a provider model: one listwise call orders the fused candidates by relevance.

The model sees the query and the first ``top_n`` candidates as numbered passages and answers
``{"ranking": [n, …]}`` (most relevant first). Parsing is deterministic (:func:`parse_ranking`):
the first JSON object with a ``ranking`` list of integers, else the first JSON array of
integers, anywhere in the reply; numbers outside ``1..top_n`` and repeats are ignored, and
passages the model left out keep their fused order after the ranked ones.

When the reply holds no usable ranking the candidates keep their **fused order** and the
outcome says so (``applied=False``, ``error``), so a search never fails because a model
rambled; provider errors (rate limits, outages, refusals) are raised to the caller. The call
goes through the caller's ``chat`` function, which owns billing (the API passes the gateway's
admitted, logged and costed path).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

from core.providers.types import ChatRequest, ChatResponse, Message, Usage
from core.rag.search import Result

ChatFn = Callable[[ChatRequest], Awaitable[ChatResponse]]
PASSAGE_CHARS = 1_200  # a passage is cut here in the prompt (chunks are ≤ 250 tokens anyway)
SYSTEM = (
    "You rank passages by how well they answer a search query. Reply with JSON only, exactly "
    '{"ranking": [passage numbers, most relevant first]}, listing every passage number once.'
)
_OBJECT = re.compile(r"\{[^{}]*\}", re.S)
_ARRAY = re.compile(r"\[[\d\s,]*\]")


class RankingUnparseable(ValueError):
    """The model's reply holds no ranking of the passages."""


@dataclass
class RerankOutcome:
    """The reordered results and what the call cost; ``applied`` is false on the fallback."""

    results: list[Result]
    model: str
    applied: bool
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    error: str | None = None


def rerank_messages(query: str, results: list[Result]) -> list[Message]:
    """The listwise prompt: numbered passages (title + text), then the query."""
    passages = "\n\n".join(
        f"[{i}] ({r.hit.document_title}) {r.hit.text[:PASSAGE_CHARS]}" for i, r in enumerate(results, start=1)
    )
    user = (
        f"Rank the passages by relevance to the query.\n\nPassages:\n\n{passages}\n\n"
        f'Query: {query}\n\nAnswer with JSON: {{"ranking": [...]}}'
    )
    return [Message(role="system", content=SYSTEM), Message(role="user", content=user)]


def _numbers(values: object, n: int) -> list[int]:
    if not isinstance(values, list):
        return []
    picked = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= n]
    return list(dict.fromkeys(picked))


def parse_ranking(text: str, n: int) -> list[int]:
    """Passage numbers (1-based, distinct, within ``1..n``) in the model's order.

    Raises :class:`RankingUnparseable` when the reply holds no valid number."""
    for match in _OBJECT.finditer(text):
        try:
            obj = json.loads(match.group(0))
        except ValueError:
            continue
        if isinstance(obj, dict) and (found := _numbers(obj.get("ranking"), n)):
            return found
    for match in _ARRAY.finditer(text):
        try:
            found = _numbers(json.loads(match.group(0)), n)
        except ValueError:
            continue
        if found:
            return found
    raise RankingUnparseable("the rerank model's reply holds no ranking of the passages")


def apply_ranking(results: list[Result], ranking: list[int]) -> list[Result]:
    """Ranked passages first, then the ones the model left out in their fused order; every
    result's ``score`` becomes ``1 − position / n`` (the model gives an order, not magnitudes)."""
    n = len(results)
    ranked = [results[i - 1] for i in ranking]
    rest = [r for i, r in enumerate(results, start=1) if i not in set(ranking)]
    out = ranked + rest
    for position, r in enumerate(out):
        r.score = 1.0 - position / n
    return out


async def model_rerank(
    chat: ChatFn,
    model: str,
    query: str,
    results: list[Result],
    top_n: int,
    cost: Callable[[ChatResponse], Decimal] | None = None,
) -> RerankOutcome:
    """Reorder the first ``top_n`` of ``results`` with ``model`` (catalog id); the rest follow.

    Provider errors propagate; an unparseable reply keeps the fused order (``applied=False``)."""
    head, tail = results[:top_n], results[top_n:]
    if len(head) < 2:
        return RerankOutcome(results=results, model=model, applied=False, error="fewer than 2 candidates")
    resp = await chat(
        ChatRequest(model=model, messages=rerank_messages(query, head), temperature=0, max_tokens=400)
    )
    spent = cost(resp) if cost is not None else Decimal(0)
    try:
        ranking = parse_ranking(resp.content, len(head))
    except RankingUnparseable as err:
        return RerankOutcome(
            results=results, model=resp.model, applied=False, usage=resp.usage, cost_usd=spent, error=str(err)
        )
    return RerankOutcome(
        results=apply_ranking(head, ranking) + tail,
        model=resp.model,
        applied=True,
        usage=resp.usage,
        cost_usd=spent,
    )
