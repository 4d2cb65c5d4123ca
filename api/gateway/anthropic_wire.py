"""The Anthropic Messages wire format at the gateway: strict request schema, response and SSE events.

Requests are validated strictly (unknown fields are refused) and mapped onto the provider layer's
normalised ``ChatRequest``, so any catalog model can answer an Anthropic client; responses and
stream events are rendered back in Anthropic's shape whatever provider served them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from core.errors import BadRequest
from core.providers.types import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    NamedToolChoice,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolDefinition,
    Usage,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheControl(_Strict):
    """Prompt-caching hint: accepted so SDK clients can send it; providers cache on their own."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(_Strict):
    """A text block (``citations`` accepted so clients can replay an earlier response)."""

    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class Base64Source(_Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class UrlSource(_Strict):
    type: Literal["url"]
    url: str = Field(pattern=r"^https?://")


class ImageBlock(_Strict):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class ToolUseBlock(_Strict):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: dict[str, Any] | None = None


class ToolResultBlock(_Strict):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[TextBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(_Strict):
    """Earlier (redacted) thinking replayed by clients; dropped: another model cannot verify it."""

    type: Literal["thinking", "redacted_thinking"]
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock, Field(discriminator="type")
]


class MessageParam(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolParam(_Strict):
    type: Literal["custom"] | None = None
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolChoiceMode(_Strict):
    type: Literal["auto", "any", "none"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Strict):
    type: Literal["tool"]
    name: str = Field(min_length=1)
    disable_parallel_tool_use: bool | None = None


class ThinkingEnabled(_Strict):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024)


class ThinkingOther(_Strict):
    type: Literal["disabled", "adaptive"]


ToolChoiceParam = Annotated[ToolChoiceMode | ToolChoiceTool, Field(discriminator="type")]


class Metadata(_Strict):
    user_id: str | None = Field(None, max_length=256)


class MessagesRequest(_Strict):
    """``POST /v1/messages`` body (Anthropic-compatible)."""

    model: str = Field(min_length=1, max_length=200)
    max_tokens: int = Field(gt=0)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    metadata: Metadata | None = None
    stream: bool = False
    # Accepted for SDK compatibility; they do not change which answer is returned.
    top_k: int | None = Field(None, ge=0)
    thinking: Annotated[ThinkingEnabled | ThinkingOther, Field(discriminator="type")] | None = None
    service_tier: Literal["auto", "standard_only"] | None = None

    @property
    def wants_thinking(self) -> bool:
        """Whether reasoning from the upstream should be returned as ``thinking`` blocks."""
        return isinstance(self.thinking, ThinkingEnabled)


def _user_messages(blocks: list[ContentBlock]) -> list[Message]:
    """Tool results become ``tool`` messages (first, as tool protocols require), then the rest."""
    out: list[Message] = []
    parts: list[TextPart | ImagePart] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            content = block.content or ""
            text = content if isinstance(content, str) else "".join(b.text for b in content)
            # The normalised model has no error flag on tool results: say it in the content.
            text = f"Error: {text}" if block.is_error else text
            out.append(Message(role="tool", tool_call_id=block.tool_use_id, content=text))
        elif isinstance(block, TextBlock):
            parts.append(TextPart(text=block.text))
        elif isinstance(block, ImageBlock):
            src = block.source
            parts.append(
                ImagePart(data=src.data, media_type=src.media_type)
                if isinstance(src, Base64Source)
                else ImagePart(url=src.url)
            )
        elif isinstance(block, ToolUseBlock):
            raise BadRequest("tool_use blocks are only allowed in assistant messages")
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        out.append(Message(role="user", content=parts[0].text))
    elif parts:
        out.append(Message(role="user", content=parts))
    return out


def _assistant_message(blocks: list[ContentBlock]) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            calls.append(ToolCall(id=block.id, name=block.name, arguments=orjson.dumps(block.input).decode()))
        elif isinstance(block, ImageBlock | ToolResultBlock):
            raise BadRequest(f"{block.type} blocks are only allowed in user messages")
    return Message(role="assistant", content="".join(texts) or None, tool_calls=calls or None)


def _tool_choice(body: MessagesRequest) -> ToolChoice | None:
    choice = body.tool_choice
    if choice is None:
        return None
    if isinstance(choice, ToolChoiceTool):
        return NamedToolChoice(name=choice.name)
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]  # type: ignore[return-value]


def to_chat_request(body: MessagesRequest, model_id: str) -> ChatRequest:
    """Map the Anthropic body onto the normalised request for catalog model ``model_id``."""
    messages: list[Message] = []
    if body.system:
        system = body.system if isinstance(body.system, str) else "\n\n".join(b.text for b in body.system)
        messages.append(Message(role="system", content=system))
    for m in body.messages:
        if isinstance(m.content, str):
            messages.append(Message(role=m.role, content=m.content))
        elif m.role == "user":
            messages.extend(_user_messages(m.content))
        else:
            messages.append(_assistant_message(m.content))
    if not messages:
        raise BadRequest("messages: at least one message must have content")
    return ChatRequest(
        model=model_id,
        messages=messages,
        tools=[
            ToolDefinition(name=t.name, description=t.description, parameters=t.input_schema)
            for t in body.tools
        ]
        if body.tools
        else None,
        tool_choice=_tool_choice(body),
        temperature=body.temperature,
        top_p=body.top_p or None,
        max_tokens=body.max_tokens,
        stop=body.stop_sequences or None,
        user=body.metadata.user_id if body.metadata else None,
    )


def stop_reason(reason: str) -> str:
    """Anthropic's ``stop_reason`` for a normalised one.

    The normalised reasons fold a matched stop sequence into "stop", reported as end_turn.
    """
    mapped = {"length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
    return mapped.get(reason, "stop_sequence" if reason == "stop_sequence" else "end_turn")


def usage_json(usage: Usage) -> dict[str, Any]:
    """Anthropic usage: ``input_tokens`` excludes cache reads (normalised usage includes them)."""
    return {
        "input_tokens": max(0, usage.input_tokens - usage.cached_tokens),
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic's ``tool_use.input`` must be."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_value": value}


def message_json(resp: ChatResponse, model: str, request_id: str, *, thinking: bool) -> bytes:
    """A ``message`` object for ``resp`` (``model`` is the catalog id that served it)."""
    content: list[dict[str, Any]] = []
    if thinking and resp.reasoning_content:
        # No signature: only Anthropic can sign thinking, and the gateway drops it on replay.
        content.append({"type": "thinking", "thinking": resp.reasoning_content, "signature": ""})
    if resp.content or not resp.tool_calls:
        content.append({"type": "text", "text": resp.content})
    for call in resp.tool_calls:
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments)}
        )
    return orjson.dumps(
        _message(f"msg_{request_id}", model, content, stop_reason(resp.stop_reason), usage_json(resp.usage))
    )


def _message(
    msg_id: str, model: str, content: list[dict[str, Any]], reason: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": usage,
    }


def event(name: str, payload: dict[str, Any]) -> bytes:
    """One SSE frame: ``event: <name>`` and its JSON ``data``."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class EventWriter:
    """Builds the Messages API event sequence for one stream, opening and closing content blocks.

    message_start, then per block content_block_start / content_block_delta… /
    content_block_stop (a ping after the first start), then message_delta (stop_reason, usage)
    and message_stop. Normalised events arrive as text, reasoning and tool-call fragments; a
    change of kind closes the open block and opens the next one.
    """

    def __init__(self, request_id: str, model: str, *, thinking: bool) -> None:
        self._id = f"msg_{request_id}"
        self._model = model
        self._thinking = thinking
        self._blocks = 0
        self._open: tuple[str, int] | None = None  # (kind, block index) of the open block
        self._tool_blocks: dict[int, int] = {}

    def start(self, estimated_input_tokens: int) -> bytes:
        """``message_start`` (input tokens are an estimate until ``message_delta``)."""
        usage = {"input_tokens": estimated_input_tokens, "output_tokens": 0}
        message = _message(self._id, self._model, [], None, usage)
        return event("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index = self._open[1]
        self._open = None
        return event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _begin(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        index = self._blocks
        self._blocks += 1
        self._open = (kind, index)
        out += event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )
        if index == 0:
            out += event("ping", {"type": "ping"})
        return out

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _fragment(self, kind: str, head: dict[str, Any], delta: dict[str, Any]) -> bytes:
        out = b"" if self._open and self._open[0] == kind else self._begin(kind, head)
        return out + self._delta(self._blocks - 1, delta)

    def text(self, text: str) -> bytes:
        return self._fragment("text", {"type": "text", "text": ""}, {"type": "text_delta", "text": text})

    def reasoning(self, text: str) -> bytes:
        """A thinking fragment, only when the request enabled thinking (dropped otherwise)."""
        if not self._thinking:
            return b""
        head = {"type": "thinking", "thinking": "", "signature": ""}
        return self._fragment("thinking", head, {"type": "thinking_delta", "thinking": text})

    def tool_call(self, index: int, call_id: str | None, name: str | None, arguments: str) -> bytes:
        out = b""
        if index not in self._tool_blocks:
            call_id = call_id or f"toolu_{self._id}_{index}"
            out = self._begin("tool", {"type": "tool_use", "id": call_id, "name": name or "", "input": {}})
            self._tool_blocks[index] = self._blocks - 1
        if arguments:
            # Adapters send one call's fragments in a row; a late fragment still goes to its block.
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out += self._delta(self._tool_blocks[index], delta)
        return out

    def finish(self, reason: str, usage: Usage | None) -> bytes:
        """Close the open block (or send an empty text block), then message_delta and message_stop."""
        out = self.text("") if self._blocks == 0 else b""
        out += self._close()
        delta = {"stop_reason": stop_reason(reason), "stop_sequence": None}
        payload = {"type": "message_delta", "delta": delta, "usage": usage_json(usage or Usage())}
        return out + event("message_delta", payload) + event("message_stop", {"type": "message_stop"})


def stream_error(kind: str, message: str) -> bytes:
    """An ``event: error`` frame for a stream that broke after it started (the SDK raises it)."""
    types = {"rate_limit": "rate_limit_error", "overloaded": "overloaded_error", "timeout": "timeout_error"}
    error = {"type": types.get(kind, "api_error"), "message": message}
    return event("error", {"type": "error", "error": error})
