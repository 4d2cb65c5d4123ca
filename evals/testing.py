"""Scripted stand-ins for ``LlmCall`` / ``Embed``, for tests of code built on the evals library.

Not used by production code: activities get :func:`evals.llm.provider_llm` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from evals.contracts import LlmReply


@dataclass
class ScriptedLlm:
    """Answers each call with ``reply(system, user)`` (or the next canned text); records calls."""

    replies: list[str] = field(default_factory=list)
    route: Callable[[str, str], str] | None = None
    cost_per_call: float = 0.001
    calls: list[dict[str, object]] = field(default_factory=list)

    async def __call__(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        json_mode: bool = False,
    ) -> LlmReply:
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = messages[-1]["content"]
        self.calls.append(
            {
                "model": model,
                "system": system,
                "user": user,
                "json_mode": json_mode,
                "temperature": temperature,
            }
        )
        text = self.route(system, user) if self.route is not None else self.replies.pop(0)
        return LlmReply(text=text, cost_usd=self.cost_per_call, input_tokens=10, output_tokens=5)


@dataclass
class TableEmbed:
    """Embeds from a fixed table (KeyError for unknown texts, so a test sees what was embedded)."""

    table: dict[str, list[float]]

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        return [self.table[text] for text in texts]
