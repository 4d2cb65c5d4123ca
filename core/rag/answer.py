"""Answers from a knowledge base: retrieve, then ask a model to answer from numbered chunks only.

When retrieval finds nothing relevant (no chunk, or the best cosine similarity is below the
threshold) the answer is :data:`NOT_FOUND` and no model is called, so nothing is invented.

The model call goes through a ``chat`` function (:func:`answer_with`), which owns billing: the
API passes the gateway's admitted, logged and costed path (as for the model rerank).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from core.providers.registry import ProviderRegistry
from core.providers.types import ChatRequest, ChatResponse, Message, Usage
from core.rag.rerank import ChatFn
from core.rag.search import Result

NOT_FOUND = "Not found in the knowledge base."
_CITE = re.compile(r"\[(\d{1,3})\]")
SYSTEM = (
    "Answer the question using only the numbered context passages. Cite every passage you use "
    "as [n]. If the passages do not contain the answer, reply exactly: " + NOT_FOUND
)


@dataclass
class Answer:
    """The answer text, the chunks it cites (1-based context numbers), the model's usage and cost."""

    text: str
    found: bool
    cited: list[int] = field(default_factory=list)
    sources: list[Result] = field(default_factory=list)
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    called: bool = False  # whether a model was asked (false on the no-relevant-context path)


def relevant(results: list[Result], min_score: float) -> list[Result]:
    """The results whose vector similarity reaches ``min_score`` (keyword-only hits are kept
    when at least one result clears the bar)."""
    if not any(r.vector_score is not None and r.vector_score >= min_score for r in results):
        return []
    return [r for r in results if r.vector_score is None or r.vector_score >= min_score]


def build_prompt(question: str, context: list[Result]) -> str:
    """The user message: numbered passages, then the question."""
    passages = "\n\n".join(
        f"[{i}] ({r.hit.document_title}) {r.hit.text}" for i, r in enumerate(context, start=1)
    )
    return f"Context passages:\n\n{passages}\n\nQuestion: {question}"


def citations_in(text: str, n_context: int) -> list[int]:
    """The distinct valid ``[n]`` markers in ``text``, in order of appearance."""
    seen = dict.fromkeys(int(m) for m in _CITE.findall(text) if 1 <= int(m) <= n_context)
    return list(seen)


async def answer(
    registry: ProviderRegistry,
    model: str,
    question: str,
    results: list[Result],
    min_score: float,
    max_tokens: int = 512,
) -> Answer:
    """Answer ``question`` from ``results`` with ``model`` (catalog id), or say not found; the
    call goes straight to ``registry`` (unbilled: callers that bill use :func:`answer_with`)."""
    return await answer_with(registry.chat, model, question, results, min_score, max_tokens)


async def answer_with(
    chat: ChatFn,
    model: str,
    question: str,
    results: list[Result],
    min_score: float,
    max_tokens: int = 512,
    cost: Callable[[ChatResponse], Decimal] | None = None,
) -> Answer:
    """Answer ``question`` from ``results`` with ``model`` through ``chat``, or say not found
    (then no model is called). Provider errors propagate; ``cost`` prices the response."""
    context = relevant(results, min_score)
    if not context:
        return Answer(text=NOT_FOUND, found=False)
    resp = await chat(
        ChatRequest(
            model=model,
            messages=[
                Message(role="system", content=SYSTEM),
                Message(role="user", content=build_prompt(question, context)),
            ],
            temperature=0,
            max_tokens=max_tokens,
        )
    )
    spent = cost(resp) if cost is not None else Decimal(0)
    text = resp.content.strip()
    if NOT_FOUND.lower().rstrip(".") in text.lower():
        return Answer(
            text=NOT_FOUND, found=False, model=resp.model, usage=resp.usage, cost_usd=spent, called=True
        )
    cited = citations_in(text, len(context)) or list(range(1, len(context) + 1))
    sources = [context[i - 1] for i in cited]
    return Answer(
        text=text,
        found=True,
        cited=cited,
        sources=sources,
        model=resp.model,
        usage=resp.usage,
        cost_usd=spent,
        called=True,
    )
