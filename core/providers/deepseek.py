"""DeepSeek: the OpenAI protocol, plus R1's ``reasoning_content``.

``deepseek-reasoner`` returns its chain of thought in ``message.reasoning_content`` and in
``delta.reasoning_content`` while streaming; the shared OpenAI parser turns those into
``ChatResponse.reasoning_content`` and :class:`ReasoningDelta` events. Cache hits arrive as
``usage.prompt_cache_hit_tokens``; a ``finish_reason`` of ``insufficient_system_resource``
becomes a retryable ``overloaded`` error. DeepSeek has no embeddings endpoint.
"""

from __future__ import annotations

from typing import ClassVar

from core.providers.openai import OpenAIAdapter, OpenAIDialect


class DeepSeekAdapter(OpenAIAdapter):
    """DeepSeek (``base_url`` ``https://api.deepseek.com``)."""

    adapter: ClassVar[str] = "deepseek"
    dialect: ClassVar[OpenAIDialect] = OpenAIDialect(
        max_tokens_field="max_tokens", send_user=False, seed_field=None, embeddings=False
    )
