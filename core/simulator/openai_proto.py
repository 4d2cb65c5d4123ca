"""OpenAI's wire protocol (also DeepSeek's, Mistral's and every OpenAI-compatible host):
``/v1/chat/completions`` (JSON and SSE), ``/v1/embeddings`` and ``/v1/models``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import orjson

from core.simulator.asgi import JSON_HEADERS, SSE_HEADERS, Headers, Request, Send
from core.simulator.content import embedding, encode_base64, split_pieces
from core.simulator.driver import (
    ErrorResponse,
    Frame,
    send_request_error,
    serve_chat,
    serve_simple,
)
from core.simulator.engine import (
    REQUEST_ERRORS,
    ChatInput,
    ErrorKind,
    Reply,
    SimError,
    Simulator,
    ToolSpec,
    new_id,
    now,
)
from core.simulator.scenario import listed_models, resolve_profile

FINGERPRINT = "nexus-sim"
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}
_ERRORS: dict[ErrorKind, tuple[int, str, str | None]] = {
    ErrorKind.BAD_REQUEST: (400, "invalid_request_error", None),
    ErrorKind.AUTH: (401, "invalid_request_error", "invalid_api_key"),
    ErrorKind.PERMISSION: (403, "invalid_request_error", "unsupported_model"),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    ErrorKind.CONTEXT_LENGTH: (400, "invalid_request_error", "context_length_exceeded"),
    ErrorKind.RATE_LIMIT: (429, "requests", "rate_limit_exceeded"),
    ErrorKind.SERVER_ERROR: (500, "server_error", None),
    ErrorKind.OVERLOADED: (503, "server_error", "overloaded"),
    ErrorKind.TIMEOUT: (504, "server_error", "timeout"),
}


def text_of(content: Any) -> str:
    """The text of an OpenAI message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class OpenAIWire:
    """Auth, errors and shapes of the OpenAI API."""

    def authenticate(self, sim: Simulator, req: Request) -> None:
        """Bearer key in ``Authorization``, checked against the scenario's keys."""
        auth = sim.scenario.auth
        value = req.headers.get("authorization", "")
        key = value[7:].strip() if value[:7].lower() == "bearer " else ""
        if auth.required and not key:
            raise SimError(ErrorKind.AUTH, "You didn't provide an API key. Use Authorization: Bearer KEY.")
        if auth.keys and key not in auth.keys:
            raise SimError(ErrorKind.AUTH, f"Incorrect API key provided: {key[:6]}****.")

    def error(self, kind: ErrorKind, message: str, retry_after_s: float | None = None) -> ErrorResponse:
        """``{"error": {"message", "type", "param", "code"}}`` with OpenAI's status codes."""
        status, etype, code = _ERRORS[kind]
        param = "messages" if kind is ErrorKind.CONTEXT_LENGTH else None
        body = orjson.dumps({"error": {"message": message, "type": etype, "param": param, "code": code}})
        headers = list(JSON_HEADERS)
        if retry_after_s is not None and kind in (ErrorKind.RATE_LIMIT, ErrorKind.OVERLOADED):
            headers.append((b"retry-after", str(math.ceil(retry_after_s)).encode()))
            headers.append((b"retry-after-ms", str(int(retry_after_s * 1000)).encode()))
        return status, body, headers

    def headers(self, rid: str) -> Headers:
        """JSON headers with ``x-request-id``."""
        return [*JSON_HEADERS, (b"x-request-id", rid.encode())]

    def stream_headers(self, rid: str) -> Headers:
        """SSE headers with ``x-request-id``."""
        return [*SSE_HEADERS, (b"x-request-id", rid.encode())]

    def malformed(self) -> bytes:
        """A ``data:`` line whose JSON is cut short."""
        return b'data: {"id": "chatcmpl-broken", "object": "chat.completion.chunk", "choices": [{"delta": {"con\n\n'

    def parse(self, req: Request, path_model: str | None) -> ChatInput:
        """Normalise a ``/v1/chat/completions`` body."""
        body = _json_body(req)
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            raise SimError(ErrorKind.BAD_REQUEST, "you must provide a model parameter")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise SimError(ErrorKind.BAD_REQUEST, "'messages' must be a non-empty array of objects")
        texts: list[str] = []
        last_user = ""
        for message in messages:
            text = text_of(message.get("content"))
            for call in message.get("tool_calls") or []:
                text += str((call.get("function") or {}).get("arguments", ""))
            texts.append(text)
            if message.get("role") == "user":
                last_user = text
        tools = [
            ToolSpec(fn["name"], fn.get("parameters"))
            for tool in body.get("tools") or []
            if isinstance(fn := tool.get("function"), dict) and isinstance(fn.get("name"), str)
        ]
        choice = body.get("tool_choice", "auto")
        if isinstance(choice, dict):
            choice = (choice.get("function") or {}).get("name", "required")
        fmt = body.get("response_format") or {}
        fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
        schema = (fmt.get("json_schema") or {}).get("schema", {}) if fmt_type == "json_schema" else None
        stop = body.get("stop") or []
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        return ChatInput(
            model=model,
            texts=texts,
            last_user=last_user,
            stream=bool(body.get("stream")),
            tools=tools,
            tool_choice=str(choice),
            after_tool_result=messages[-1].get("role") in ("tool", "function"),
            json_mode=fmt_type == "json_object",
            json_schema=schema,
            max_tokens=int(max_tokens) if isinstance(max_tokens, int) else None,
            stop=[stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)],
            include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
            n=int(body.get("n") or 1),
            extra_prompt_text=orjson.dumps(body["tools"]).decode() if body.get("tools") else "",
        )

    def render(self, sim: Simulator, inp: ChatInput, replies: list[Reply], rid: str) -> bytes:
        """A ``chat.completion`` object."""
        choices = []
        for index, reply in enumerate(replies):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": reply.text if not reply.tool_calls else None,
                "refusal": None,
            }
            if reply.reasoning:
                message["reasoning_content"] = reply.reasoning
            if reply.tool_calls:
                message["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in reply.tool_calls
                ]
            choices.append(
                {"index": index, "message": message, "logprobs": None, "finish_reason": _FINISH[reply.finish]}
            )
        return orjson.dumps(
            {
                "id": rid,
                "object": "chat.completion",
                "created": now(),
                "model": sim.display_model(inp.model),
                "system_fingerprint": FINGERPRINT,
                "choices": choices,
                "usage": _usage(replies),
            }
        )

    def frames(self, sim: Simulator, inp: ChatInput, reply: Reply, rid: str) -> Iterator[tuple[bytes, Frame]]:
        """``chat.completion.chunk`` events, a usage chunk if asked, then ``[DONE]``."""
        base: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": now(),
            "model": sim.display_model(inp.model),
            "system_fingerprint": FINGERPRINT,
        }
        if inp.include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse({**base, "choices": [choice]})

        yield chunk({"role": "assistant", "content": "", "refusal": None}), Frame.META
        if reply.reasoning:
            for piece in split_pieces(reply.reasoning):
                yield chunk({"content": None, "reasoning_content": piece}), Frame.TOKEN
        for index, call in enumerate(reply.tool_calls):
            head = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            yield chunk({"tool_calls": [head]}), Frame.TOKEN
            for start in range(0, len(call.arguments), 8):
                part = {"index": index, "function": {"arguments": call.arguments[start : start + 8]}}
                yield chunk({"tool_calls": [part]}), Frame.TOKEN
        if not reply.tool_calls:
            for piece in split_pieces(reply.text) if reply.text else []:
                yield chunk({"content": piece}), Frame.TOKEN
        yield chunk({}, _FINISH[reply.finish]), Frame.END
        if inp.include_usage:
            yield _sse({**base, "choices": [], "usage": _usage([reply])}), Frame.END
        yield b"data: [DONE]\n\n", Frame.END


def _usage(replies: list[Reply]) -> dict[str, Any]:
    prompt = replies[0].prompt_tokens
    completion = sum(r.completion_tokens for r in replies)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": sum(r.reasoning_tokens for r in replies),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _json_body(req: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise SimError(
            ErrorKind.BAD_REQUEST, f"We could not parse the JSON body of your request: {exc}"
        ) from exc
    if not isinstance(body, dict):
        raise SimError(ErrorKind.BAD_REQUEST, "The request body must be a JSON object.")
    return body


WIRE = OpenAIWire()


async def chat_completions(sim: Simulator, req: Request, send: Send) -> None:
    """``POST /v1/chat/completions``."""
    await serve_chat(sim, WIRE, req, send, new_id("chatcmpl-"))


async def embeddings(sim: Simulator, req: Request, send: Send) -> None:
    """``POST /v1/embeddings``: deterministic unit vectors, float or base64."""
    rid = new_id("req_")
    try:
        WIRE.authenticate(sim, req)
        body = _json_body(req)
        model, raw = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model:
            raise SimError(ErrorKind.BAD_REQUEST, "you must provide a model parameter")
        inputs = _embedding_inputs(raw)
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise SimError(ErrorKind.BAD_REQUEST, "encoding_format must be 'float' or 'base64'")
        profile = sim.profile(model)
    except REQUEST_ERRORS as exc:
        await send_request_error(send, WIRE, exc)
        return
    dim = body.get("dimensions") if isinstance(body.get("dimensions"), int) else profile.embedding_dim

    def build() -> bytes:
        data = []
        for index, text in enumerate(inputs):
            vector = embedding(text, dim, profile.embedding_mode)
            value: Any = encode_base64(vector) if encoding == "base64" else vector
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = sum(sim.tokens.count(text) for text in inputs)
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": sim.display_model(model),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    await serve_simple(sim, WIRE, req, send, profile, "embeddings", build, rid)


def _embedding_inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(item, int) for item in raw):
            return [" ".join(map(str, raw))]
        if all(isinstance(item, str) for item in raw):
            return list(raw)
        if all(isinstance(item, list) for item in raw):
            return [" ".join(map(str, item)) for item in raw]
    raise SimError(ErrorKind.BAD_REQUEST, "'input' must be a string, an array of strings or of token arrays")


def model_object(sim: Simulator, name: str) -> dict[str, Any]:
    """One entry of ``/v1/models``."""
    owner = resolve_profile(sim.scenario, name).owned_by
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": owner}


async def list_models(sim: Simulator, req: Request, send: Send) -> None:
    """``GET /v1/models``: the scenario's named (non-pattern) models."""
    try:
        WIRE.authenticate(sim, req)
    except REQUEST_ERRORS as exc:
        await send_request_error(send, WIRE, exc)
        return
    data = [model_object(sim, name) for name in listed_models(sim.scenario)]
    body = orjson.dumps({"object": "list", "data": data})
    await serve_simple(sim, WIRE, req, send, sim.server_profile(), "models", lambda: body, new_id("req_"))


async def get_model(sim: Simulator, req: Request, send: Send, name: str) -> None:
    """``GET /v1/models/{id}``."""
    try:
        WIRE.authenticate(sim, req)
        if sim.scenario.models and not sim.known(name):
            raise SimError(ErrorKind.NOT_FOUND, f"The model `{name}` does not exist")
        body = orjson.dumps(model_object(sim, name))
    except REQUEST_ERRORS as exc:
        await send_request_error(send, WIRE, exc)
        return
    await serve_simple(sim, WIRE, req, send, sim.server_profile(), "models", lambda: body, new_id("req_"))
