"""The model gateway: OpenAI- and Anthropic-compatible fast path (one model call, no workflow)."""
