"""The normalised request, response and stream-event model every provider adapter speaks.

Conventions that hold for every provider:

* ``Usage.input_tokens`` counts the whole prompt, *including* cached tokens;
  ``Usage.output_tokens`` counts the whole completion, *including* reasoning tokens.
  Adapters translate providers that count differently (Anthropic, Gemini).
* ``ChatRequest.metadata`` is NexusAI-internal (logs, tracing): it is never sent upstream.
* Tool-call ``arguments`` are JSON text, as in the OpenAI protocol.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "user", "assistant", "tool"]
StopReason = Literal["stop", "length", "tool_calls", "content_filter"]


class TextPart(BaseModel):
    """A text fragment of a multi-part message."""

    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image: either a URL or inline base64 ``data`` with its ``media_type``."""

    type: Literal["image"] = "image"
    url: str | None = None
    data: str | None = Field(None, description="Base64 bytes (no data: prefix).")
    media_type: str | None = Field(None, description="e.g. image/png; required with data.")
    detail: Literal["auto", "low", "high"] | None = None

    def data_url(self) -> str:
        """The image as a URL (``data:`` URL for inline bytes)."""
        if self.data is not None:
            return f"data:{self.media_type or 'image/png'};base64,{self.data}"
        return self.url or ""


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ToolCall(BaseModel):
    """A function call requested by the model."""

    id: str
    name: str
    arguments: str = Field("{}", description="JSON text of the arguments.")


class Message(BaseModel):
    """One chat message. ``tool`` messages answer a tool call through ``tool_call_id``."""

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The concatenated text of the message (images left out)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def images(self) -> list[ImagePart]:
        """The image parts of the message."""
        if isinstance(self.content, list):
            return [p for p in self.content if isinstance(p, ImagePart)]
        return []


class ToolDefinition(BaseModel):
    """A function the model may call; ``parameters`` is a JSON schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class NamedToolChoice(BaseModel):
    """Force a call of one named tool."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class ResponseFormat(BaseModel):
    """Plain text, any JSON object, or JSON matching ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None
    name: str = "response"
    strict: bool | None = None


class ChatRequest(BaseModel):
    """A chat call. ``model`` is a catalog id at the registry, the upstream name at an adapter."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, gt=0)
    stop: list[str] | None = None
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Usage(BaseModel):
    """Token usage; see the module docstring for what each count includes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class ChatResponse(BaseModel):
    """A finished chat completion."""

    id: str
    model: str
    provider: str
    content: str = ""
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    stop_reason: StopReason = "stop"
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float = 0.0
    ttft_ms: float | None = None


class TextDelta(BaseModel):
    """A fragment of the answer text."""

    type: Literal["text_delta"] = "text_delta"
    text: str


class ReasoningDelta(BaseModel):
    """A fragment of the model's reasoning (DeepSeek R1, Claude thinking, Gemini thoughts)."""

    type: Literal["reasoning_delta"] = "reasoning_delta"
    text: str


class ToolCallDelta(BaseModel):
    """A fragment of tool call ``index``: ``id``/``name`` come first, then argument text."""

    type: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class UsageEvent(BaseModel):
    """Usage of the whole call, sent once before ``done``."""

    type: Literal["usage"] = "usage"
    usage: Usage


class DoneEvent(BaseModel):
    """The stream ended normally."""

    type: Literal["done"] = "done"
    stop_reason: StopReason = "stop"
    id: str = ""
    model: str = ""
    latency_ms: float = 0.0
    ttft_ms: float | None = None


class ErrorEvent(BaseModel):
    """The stream broke after it had started; always the last event."""

    type: Literal["error"] = "error"
    kind: str
    message: str
    retryable: bool
    status: int | None = None
    retry_after_s: float | None = None
    provider: str = ""


StreamEvent = Annotated[
    TextDelta | ReasoningDelta | ToolCallDelta | UsageEvent | DoneEvent | ErrorEvent,
    Field(discriminator="type"),
]


class EmbeddingRequest(BaseModel):
    """Embed one or more texts."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: list[str] = Field(min_length=1)
    dimensions: int | None = Field(None, gt=0)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input_as_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class EmbeddingResponse(BaseModel):
    """One vector per input text, in input order."""

    model: str
    provider: str
    embeddings: list[list[float]]
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float = 0.0
