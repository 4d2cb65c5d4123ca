"""Mistral La Plateforme: the OpenAI protocol with Mistral's field names.

Mistral rejects unknown fields, names the seed ``random_seed``, spells a forced tool call
``any``, and always reports usage in the last stream chunk (no ``stream_options``).
"""

from __future__ import annotations

from typing import ClassVar

from core.providers.openai import OpenAIAdapter, OpenAIDialect


class MistralAdapter(OpenAIAdapter):
    """Mistral (``base_url`` ``https://api.mistral.ai/v1``)."""

    adapter: ClassVar[str] = "mistral"
    dialect: ClassVar[OpenAIDialect] = OpenAIDialect(
        max_tokens_field="max_tokens",
        stream_options=False,
        send_user=False,
        seed_field="random_seed",
        required_tool_choice="any",
    )
