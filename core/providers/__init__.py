"""The provider layer: normalised types, error taxonomy, adapters, catalog, tokens and cost.

Typical use (the caller owns the HTTP client: an ``httpx.AsyncClient``, or the gateway's
``AiohttpUpstream`` from ``core.providers.transport``)::

    catalog = Catalog.load(settings.providers)
    registry = ProviderRegistry(catalog, settings.providers, client)
    response = await registry.chat(ChatRequest(model="sim-openai/gpt-4o-mini", messages=[...]))

See docs/providers.md.
"""

from core.providers.base import Provider
from core.providers.catalog import Capability, Catalog, CatalogError, ModelEntry, RouteGroup
from core.providers.cost import CostEstimate, cost_usd, estimate_chat_cost, estimate_embedding_cost
from core.providers.errors import ErrorKind, ProviderError, parse_retry_after
from core.providers.registry import ProviderRegistry, missing_capabilities
from core.providers.settings import ProvidersSettings, ProviderTimeouts
from core.providers.sse import collect_stream
from core.providers.types import (
    ChatRequest,
    ChatResponse,
    DoneEvent,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorEvent,
    Message,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolDefinition,
    Usage,
    UsageEvent,
)

__all__ = [
    "Capability",
    "Catalog",
    "CatalogError",
    "ChatRequest",
    "ChatResponse",
    "CostEstimate",
    "DoneEvent",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "ErrorEvent",
    "ErrorKind",
    "Message",
    "ModelEntry",
    "Provider",
    "ProviderError",
    "ProviderRegistry",
    "ProviderTimeouts",
    "ProvidersSettings",
    "ReasoningDelta",
    "RouteGroup",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolDefinition",
    "Usage",
    "UsageEvent",
    "collect_stream",
    "cost_usd",
    "estimate_chat_cost",
    "estimate_embedding_cost",
    "missing_capabilities",
    "parse_retry_after",
]
