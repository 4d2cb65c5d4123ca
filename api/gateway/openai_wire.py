"""The OpenAI wire format at the gateway: strict request schemas and response/chunk builders.

Requests are validated strictly (unknown fields are refused, as OpenAI itself does) and mapped
onto the provider layer's normalised ``ChatRequest``; responses are rendered back in OpenAI's
shape whatever provider served them.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import BadRequest
from core.providers.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ImagePart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolDefinition,
    Usage,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageUrl(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextContent(_Strict):
    type: Literal["text"]
    text: str


class ImageContent(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextContent | ImageContent, Field(discriminator="type")]


class FunctionCall(_Strict):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class FunctionDef(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Strict):
    name: str


class ToolChoiceFunction(_Strict):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaFormat(_Strict):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormatIn(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    """``POST /v1/chat/completions`` body (OpenAI-compatible)."""

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None
    response_format: ResponseFormatIn | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(None, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1, description="Only 1 is supported.")
    # Accepted for SDK compatibility; they do not change which answer is returned.
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    logprobs: Literal[False] | None = Field(None, description="Log probabilities are not supported.")

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream=true")
        return self


def _message(m: ChatMessage) -> Message:
    content: str | list[TextPart | ImagePart] | None
    if isinstance(m.content, list):
        parts: list[TextPart | ImagePart] = []
        for part in m.content:
            if isinstance(part, TextContent):
                parts.append(TextPart(text=part.text))
            else:
                parts.append(_image(part.image_url))
        content = parts
    else:
        content = m.content
    return Message(
        role="system" if m.role == "developer" else m.role,
        content=content,
        name=m.name,
        tool_calls=[
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in m.tool_calls
        ]
        if m.tool_calls
        else None,
        tool_call_id=m.tool_call_id,
    )


def _image(image: ImageUrl) -> ImagePart:
    url = image.url
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        return ImagePart(data=data, media_type=media_type, detail=image.detail)
    if not url.startswith(("https://", "http://")):
        raise BadRequest("image_url.url must be an http(s) URL or a data: URL")
    return ImagePart(url=url, detail=image.detail)


def to_chat_request(body: ChatCompletionRequest, model_id: str) -> ChatRequest:
    """Map the OpenAI body onto the normalised request for catalog model ``model_id``."""
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None
    if isinstance(body.tool_choice, ToolChoiceFunction):
        tool_choice = NamedToolChoice(name=body.tool_choice.function.name)
    else:
        tool_choice = body.tool_choice
    fmt = None
    if body.response_format is not None:
        schema = body.response_format.json_schema
        fmt = ResponseFormat(
            type=body.response_format.type,
            json_schema=schema.schema_ if schema else None,
            name=schema.name if schema else "response",
            strict=schema.strict if schema else None,
        )
    return ChatRequest(
        model=model_id,
        messages=[_message(m) for m in body.messages],
        tools=[
            ToolDefinition(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters or {"type": "object", "properties": {}},
            )
            for t in body.tools
        ]
        if body.tools
        else None,
        tool_choice=tool_choice,
        response_format=fmt,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=[body.stop] if isinstance(body.stop, str) else body.stop,
        seed=body.seed,
        user=body.user,
    )


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _tool_calls_json(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}


def completion_json(resp: ChatResponse, model: str, request_id: str, fingerprint: str) -> bytes:
    """A ``chat.completion`` object for ``resp`` (``model`` is the catalog id that served it)."""
    message: dict[str, Any] = {"role": "assistant", "content": resp.content if resp.content else None}
    if not resp.content and not resp.tool_calls:
        message["content"] = ""
    if resp.tool_calls:
        message["tool_calls"] = _tool_calls_json(resp.tool_calls)
    if resp.reasoning_content:
        message["reasoning_content"] = resp.reasoning_content
    message["refusal"] = None
    return orjson.dumps(
        {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": fingerprint,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": FINISH.get(resp.stop_reason, "stop"),
                    "logprobs": None,
                }
            ],
            "usage": usage_json(resp.usage),
        }
    )


class ChunkWriter:
    """Builds ``chat.completion.chunk`` SSE frames for one stream."""

    def __init__(self, request_id: str, model: str, fingerprint: str) -> None:
        self._base = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": fingerprint,
        }

    def _frame(self, payload: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({**self._base, **payload}) + b"\n\n"

    def delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._frame(
            {"choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        )

    def role(self) -> bytes:
        return self.delta({"role": "assistant", "content": ""})

    def text(self, text: str) -> bytes:
        return self.delta({"content": text})

    def reasoning(self, text: str) -> bytes:
        return self.delta({"reasoning_content": text})

    def tool_call(self, index: int, call_id: str | None, name: str | None, arguments: str) -> bytes:
        call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
        if call_id:
            call["id"] = call_id
            call["type"] = "function"
        if name:
            call["function"]["name"] = name
        return self.delta({"tool_calls": [call]})

    def finish(self, stop_reason: str) -> bytes:
        return self.delta({}, FINISH.get(stop_reason, "stop"))

    def usage(self, usage: Usage) -> bytes:
        return self._frame({"choices": [], "usage": usage_json(usage)})


DONE = b"data: [DONE]\n\n"


def error_json(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope (what the official SDKs parse)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def stream_error_frame(message: str, type_: str, code: str) -> bytes:
    """An in-stream error: the OpenAI SDK raises ``APIError`` on a chunk carrying ``error``."""
    return b"data: " + orjson.dumps(error_json(message, type_, code)) + b"\n\n"


class EmbeddingsRequest(_Strict):
    """``POST /v1/embeddings`` body (OpenAI-compatible)."""

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(description="Text or texts (token arrays are not supported).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, gt=0, le=8192)
    user: str | None = Field(None, max_length=256)

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts or len(texts) > 2048:
            raise BadRequest("input must hold 1 to 2048 texts")
        return texts


def to_embedding_request(body: EmbeddingsRequest, model_id: str) -> EmbeddingRequest:
    return EmbeddingRequest(model=model_id, input=body.texts(), dimensions=body.dimensions, user=body.user)


def embeddings_json(resp: EmbeddingResponse, model: str, encoding_format: str) -> bytes:
    import base64
    import struct

    data = []
    for i, vector in enumerate(resp.embeddings):
        value: Any = vector
        if encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": resp.usage.input_tokens, "total_tokens": resp.usage.input_tokens},
        }
    )
