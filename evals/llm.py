"""``LlmCall`` / ``Embed`` adapters over the provider layer (``core.providers``).

Activities build them from the worker's ``ProviderRegistry`` and ``Catalog`` and hand them to the
metric library in a :class:`~evals.contracts.MetricContext`. Costs are computed from the reported
usage and catalog prices (``core.providers.cost_usd``). Provider errors (``ProviderError``)
propagate unchanged, so the activity maps them to retryable / non-retryable failures.

``json_mode`` asks for a JSON object response format only when the catalog says the model
supports it; the judge prompts demand strict JSON either way.
"""

from __future__ import annotations

from typing import cast

from core.providers import (
    Capability,
    Catalog,
    ChatRequest,
    EmbeddingRequest,
    Message,
    ProviderRegistry,
    cost_usd,
)
from core.providers.types import ResponseFormat, Role
from evals.contracts import LlmCall, LlmReply


class _ProviderLlm:
    def __init__(self, registry: ProviderRegistry, catalog: Catalog) -> None:
        self._registry = registry
        self._catalog = catalog

    async def __call__(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        json_mode: bool = False,
    ) -> LlmReply:
        entry = self._catalog.get(model)
        response_format = None
        if json_mode and Capability.json in entry.capabilities:
            response_format = ResponseFormat(type="json_object")
        request = ChatRequest(
            model=model,
            messages=[Message(role=cast(Role, m["role"]), content=m["content"]) for m in messages],
            temperature=temperature,
            max_tokens=max_tokens,
            response_format=response_format,
        )
        response = await self._registry.chat(request)
        return LlmReply(
            text=response.content,
            cost_usd=float(cost_usd(response.usage, entry.prices)),
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
        )


def provider_llm(registry: ProviderRegistry, catalog: Catalog) -> LlmCall:
    """An :class:`~evals.contracts.LlmCall` that calls catalog models through ``registry``."""
    return _ProviderLlm(registry, catalog)


class ProviderEmbed:
    """Embeds through catalog model ``model``; ``cost_usd`` totals what the calls cost so far."""

    def __init__(self, registry: ProviderRegistry, model: str) -> None:
        self._registry = registry
        self._model = model
        self.cost_usd = 0.0

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        response = await self._registry.embed(EmbeddingRequest(model=self._model, input=texts))
        self.cost_usd += float(cost_usd(response.usage, self._registry.catalog.get(self._model).prices))
        return [list(vector) for vector in response.embeddings]


def provider_embed(registry: ProviderRegistry, model: str) -> ProviderEmbed:
    """An :class:`~evals.contracts.Embed` over catalog embedding model ``model``."""
    return ProviderEmbed(registry, model)
