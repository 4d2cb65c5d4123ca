"""The registry: adapters built from the catalog and credentials, addressed by catalog id.

``ProviderRegistry`` itself satisfies the ``Provider`` protocol for catalog model ids: it
checks the model's capabilities, sends the upstream model name through the right adapter and
reports the catalog id and provider name back. One adapter is built per catalog provider, all
sharing the caller's HTTP client (an ``Upstream`` or an ``httpx.AsyncClient``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from core.providers.anthropic import AnthropicAdapter
from core.providers.base import HttpAdapter
from core.providers.catalog import Capability, Catalog, ModelEntry
from core.providers.deepseek import DeepSeekAdapter
from core.providers.errors import ErrorKind, ProviderError
from core.providers.gemini import GeminiAdapter
from core.providers.mistral import MistralAdapter
from core.providers.openai import OpenAIAdapter
from core.providers.openai_compatible import OpenAICompatibleAdapter
from core.providers.settings import ProvidersSettings
from core.providers.tokens import count_text
from core.providers.transport import Upstream
from core.providers.types import (
    ChatRequest,
    ChatResponse,
    DoneEvent,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamEvent,
    Usage,
)

ADAPTERS: dict[str, type[HttpAdapter]] = {
    "openai": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "mistral": MistralAdapter,
    "deepseek": DeepSeekAdapter,
    "openai_compatible": OpenAICompatibleAdapter,
}


def missing_capabilities(model: ModelEntry, req: ChatRequest) -> list[Capability]:
    """Capabilities ``req`` needs that ``model`` lacks (empty = the model can serve it)."""
    needed = {Capability.chat}
    if req.tools:
        needed.add(Capability.tools)
    if any(isinstance(m.content, list) and m.images() for m in req.messages):
        needed.add(Capability.vision)
    if req.response_format is not None and req.response_format.type != "text":
        needed.add(Capability.json)
    return sorted(needed - model.capabilities)


class ProviderRegistry:
    """Calls catalog models by id through adapters built once per provider."""

    name = "registry"

    def __init__(
        self, catalog: Catalog, settings: ProvidersSettings, client: httpx.AsyncClient | Upstream
    ) -> None:
        self.catalog = catalog
        self._settings = settings
        self._client = client
        self._adapters: dict[str, HttpAdapter] = {}

    def __repr__(self) -> str:
        return f"ProviderRegistry(providers={sorted(self.catalog.providers)!r})"

    def adapter(self, provider: str) -> HttpAdapter:
        """The adapter of catalog provider ``provider`` (built on first use)."""
        if provider not in self._adapters:
            entry = self.catalog.providers[provider]
            cls = ADAPTERS[entry.adapter]
            self._adapters[provider] = cls(
                client=self._client,
                base_url=entry.base_url,
                api_key=self._settings.api_key(entry.key) if entry.key else None,
                timeouts=self._settings.timeouts,
                name=provider,
            )
        return self._adapters[provider]

    def _upstream_chat(self, req: ChatRequest) -> tuple[ModelEntry, HttpAdapter, ChatRequest]:
        model = self.catalog.get(req.model)
        missing = missing_capabilities(model, req)
        if missing:
            names = ", ".join(c.value for c in missing)
            raise ProviderError(
                ErrorKind.bad_request,
                f"model {model.id!r} does not support: {names}",
                provider=model.provider,
            )
        adapter = self.adapter(model.provider)
        update: dict[str, object] = {"model": model.upstream}
        if req.max_tokens is None and isinstance(adapter, AnthropicAdapter):
            update["max_tokens"] = min(
                adapter.default_max_tokens, model.max_output_tokens or adapter.default_max_tokens
            )
        return model, adapter, req.model_copy(update=update)

    async def chat(self, req: ChatRequest) -> ChatResponse:
        """One completion from catalog model ``req.model``."""
        model, adapter, upstream = self._upstream_chat(req)
        resp = await adapter.chat(upstream)
        return resp.model_copy(update={"model": model.id, "provider": model.provider})

    async def stream(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """A streamed completion from catalog model ``req.model`` (errors as in ``core.providers.base``)."""
        model, adapter, upstream = self._upstream_chat(req)
        events = adapter.stream(upstream)
        try:
            async for event in events:
                if isinstance(event, DoneEvent):
                    event = event.model_copy(update={"model": model.id})
                yield event
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """Vectors from catalog model ``req.model``; usage estimated offline when not reported."""
        model = self.catalog.get(req.model)
        if Capability.embeddings not in model.capabilities:
            raise ProviderError(
                ErrorKind.bad_request,
                f"model {model.id!r} is not an embedding model",
                provider=model.provider,
            )
        resp = await self.adapter(model.provider).embed(req.model_copy(update={"model": model.upstream}))
        usage = resp.usage
        if usage.input_tokens == 0:
            usage = Usage(input_tokens=sum(count_text(text) for text in req.input))
        return resp.model_copy(update={"model": model.id, "provider": model.provider, "usage": usage})
