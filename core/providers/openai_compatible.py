"""Generic OpenAI-compatible servers: Meta Llama hosts, Together, Groq, Ollama, vLLM, llama.cpp.

The operator fixes ``base_url`` in the catalog (for example ``http://127.0.0.1:11434/v1`` for
Ollama). These servers vary, so the dialect is conservative: ``max_tokens`` rather than
``max_completion_tokens``, and a stream that carried a ``finish_reason`` counts as complete
even if the server omits the final ``data: [DONE]``.
"""

from __future__ import annotations

from typing import ClassVar

from core.providers.openai import OpenAIAdapter, OpenAIDialect


class OpenAICompatibleAdapter(OpenAIAdapter):
    """Any server speaking OpenAI Chat Completions and (optionally) Embeddings."""

    adapter: ClassVar[str] = "openai_compatible"
    dialect: ClassVar[OpenAIDialect] = OpenAIDialect(max_tokens_field="max_tokens", strict_done=False)
