"""Google Gemini's REST protocol (``/v1beta/models/{model}:generateContent``,
``:streamGenerateContent`` with or without ``alt=sse``, ``:embedContent``,
``:batchEmbedContents``, ``:countTokens`` and the model list).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import orjson

from core.simulator.asgi import JSON_HEADERS, SSE_HEADERS, Headers, Request, Send
from core.simulator.content import embedding, split_pieces
from core.simulator.driver import (
    ErrorResponse,
    Frame,
    send_error,
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
)
from core.simulator.scenario import listed_models

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
_ERRORS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.BAD_REQUEST: (400, "INVALID_ARGUMENT"),
    ErrorKind.AUTH: (400, "INVALID_ARGUMENT"),
    ErrorKind.PERMISSION: (403, "PERMISSION_DENIED"),
    ErrorKind.NOT_FOUND: (404, "NOT_FOUND"),
    ErrorKind.CONTEXT_LENGTH: (400, "INVALID_ARGUMENT"),
    ErrorKind.RATE_LIMIT: (429, "RESOURCE_EXHAUSTED"),
    ErrorKind.SERVER_ERROR: (500, "INTERNAL"),
    ErrorKind.OVERLOADED: (503, "UNAVAILABLE"),
    ErrorKind.TIMEOUT: (504, "DEADLINE_EXCEEDED"),
}


def _get(obj: Any, camel: str, snake: str, default: Any = None) -> Any:
    """Gemini's JSON accepts lowerCamel and snake_case field names."""
    if not isinstance(obj, dict):
        return default
    return obj.get(camel, obj.get(snake, default))


def _parts_text(content: Any) -> tuple[str, bool]:
    """Text of a ``Content`` and whether it carries a function response."""
    texts: list[str] = []
    has_response = False
    for part in _get(content, "parts", "parts", []) or []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        call = _get(part, "functionCall", "function_call")
        if call:
            texts.append(orjson.dumps(call).decode())
        response = _get(part, "functionResponse", "function_response")
        if response:
            has_response = True
            texts.append(orjson.dumps(response).decode())
    return "".join(texts), has_response


class GeminiWire:
    """Auth, errors and shapes of the Gemini API."""

    def authenticate(self, sim: Simulator, req: Request) -> None:
        """Key in ``x-goog-api-key`` or ``?key=``; missing → 403, wrong → 400 API_KEY_INVALID."""
        auth = sim.scenario.auth
        key = req.headers.get("x-goog-api-key") or req.query.get("key", "")
        if auth.required and not key:
            raise SimError(
                ErrorKind.PERMISSION,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if auth.keys and key not in auth.keys:
            raise SimError(ErrorKind.AUTH, "API key not valid. Please pass a valid API key.")

    def error(self, kind: ErrorKind, message: str, retry_after_s: float | None = None) -> ErrorResponse:
        """``{"error": {"code", "message", "status", "details"}}`` (RetryInfo on 429)."""
        status, name = _ERRORS[kind]
        error: dict[str, Any] = {"code": status, "message": message, "status": name}
        headers = list(JSON_HEADERS)
        if kind is ErrorKind.AUTH:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            ]
        if retry_after_s is not None and kind in (ErrorKind.RATE_LIMIT, ErrorKind.OVERLOADED):
            delay = math.ceil(retry_after_s)
            error["details"] = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"}
            ]
            headers.append((b"retry-after", str(delay).encode()))
        return status, orjson.dumps({"error": error}), headers

    def headers(self, rid: str) -> Headers:
        """JSON headers."""
        return JSON_HEADERS

    def stream_headers(self, rid: str) -> Headers:
        """SSE headers (or a streamed JSON array without ``alt=sse``)."""
        return SSE_HEADERS

    def malformed(self) -> bytes:
        """A ``data:`` line whose JSON is cut short."""
        return b'data: {"candidates": [{"content": {"parts": [{"te\r\n\r\n'

    def parse(self, req: Request, path_model: str | None) -> ChatInput:
        """Normalise a ``GenerateContentRequest``."""
        body = _json_body(req)
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise SimError(
                ErrorKind.BAD_REQUEST, "* GenerateContentRequest.contents: contents is not specified"
            )
        system, _ = _parts_text(_get(body, "systemInstruction", "system_instruction"))
        texts = [system] if system else []
        last_user, after_response = "", False
        for content in contents:
            text, has_response = _parts_text(content)
            texts.append(text)
            after_response = has_response
            if _get(content, "role", "role", "user") == "user" and not has_response:
                last_user = text
        tools = [
            ToolSpec(
                decl["name"],
                _get(decl, "parameters", "parameters")
                or _get(decl, "parametersJsonSchema", "parameters_json_schema"),
            )
            for tool in body.get("tools") or []
            for decl in _get(tool, "functionDeclarations", "function_declarations", []) or []
            if isinstance(decl, dict) and isinstance(decl.get("name"), str)
        ]
        calling = _get(
            _get(body, "toolConfig", "tool_config", {}),
            "functionCallingConfig",
            "function_calling_config",
            {},
        )
        mode = str(_get(calling, "mode", "mode", "AUTO")).upper()
        allowed = _get(calling, "allowedFunctionNames", "allowed_function_names") or []
        choice = {"NONE": "none", "ANY": allowed[0] if len(allowed) == 1 else "required"}.get(mode, "auto")
        config = _get(body, "generationConfig", "generation_config", {}) or {}
        mime = _get(config, "responseMimeType", "response_mime_type", "")
        schema = _get(config, "responseSchema", "response_schema") or _get(
            config, "responseJsonSchema", "response_json_schema"
        )
        thinking = _get(config, "thinkingConfig", "thinking_config", {}) or {}
        max_tokens = _get(config, "maxOutputTokens", "max_output_tokens")
        return ChatInput(
            model=path_model or "",
            texts=texts,
            last_user=last_user,
            stream=req.path.endswith(":streamGenerateContent"),
            tools=tools,
            tool_choice=choice,
            after_tool_result=after_response,
            json_mode=mime == "application/json",
            json_schema=schema if mime == "application/json" else None,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            stop=[s for s in _get(config, "stopSequences", "stop_sequences", []) or [] if isinstance(s, str)],
            n=int(_get(config, "candidateCount", "candidate_count", 1) or 1),
            extra_prompt_text=orjson.dumps(body["tools"]).decode() if body.get("tools") else "",
            reasoning=bool(_get(thinking, "includeThoughts", "include_thoughts", False)),
        )

    def _usage(self, replies: list[Reply], final: bool = True) -> dict[str, Any]:
        prompt = replies[0].prompt_tokens
        usage: dict[str, Any] = {"promptTokenCount": prompt}
        if final:
            thoughts = sum(r.reasoning_tokens for r in replies)
            candidates = sum(r.completion_tokens for r in replies) - thoughts
            usage.update(
                {"candidatesTokenCount": candidates, "totalTokenCount": prompt + candidates + thoughts}
            )
            if thoughts:
                usage["thoughtsTokenCount"] = thoughts
        return usage

    def _candidate(self, index: int, parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": index}
        if finish is not None:
            candidate["finishReason"] = finish
        return candidate

    def _parts(self, reply: Reply) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if reply.reasoning:
            parts.append({"text": reply.reasoning, "thought": True})
        if reply.tool_calls:
            parts += [
                {"functionCall": {"name": c.name, "args": orjson.loads(c.arguments)}}
                for c in reply.tool_calls
            ]
        else:
            parts.append({"text": reply.text})
        return parts

    def render(self, sim: Simulator, inp: ChatInput, replies: list[Reply], rid: str) -> bytes:
        """A ``GenerateContentResponse``."""
        candidates = [self._candidate(i, self._parts(r), _FINISH[r.finish]) for i, r in enumerate(replies)]
        return orjson.dumps(
            {
                "candidates": candidates,
                "usageMetadata": self._usage(replies),
                "modelVersion": sim.display_model(inp.model),
                "responseId": rid,
            }
        )

    def frames(self, sim: Simulator, inp: ChatInput, reply: Reply, rid: str) -> Iterator[tuple[bytes, Frame]]:
        """One ``GenerateContentResponse`` per piece; the last carries finishReason and usage."""
        model = sim.display_model(inp.model)
        chunks: list[tuple[list[dict[str, Any]], Frame]] = []
        if reply.reasoning:
            chunks += [([{"text": p, "thought": True}], Frame.TOKEN) for p in split_pieces(reply.reasoning)]
        if reply.tool_calls:
            calls = [
                {"functionCall": {"name": c.name, "args": orjson.loads(c.arguments)}}
                for c in reply.tool_calls
            ]
            chunks.append((calls, Frame.TOKEN))
        elif reply.text:
            chunks += [([{"text": p}], Frame.TOKEN) for p in split_pieces(reply.text)]
        chunks.append(([{"text": ""}], Frame.END))
        last = len(chunks) - 1
        for index, (parts, what) in enumerate(chunks):
            finish = _FINISH[reply.finish] if index == last else None
            payload = orjson.dumps(
                {
                    "candidates": [self._candidate(0, parts, finish)],
                    "usageMetadata": self._usage([reply], final=index == last),
                    "modelVersion": model,
                    "responseId": rid,
                }
            )
            yield b"data: " + payload + b"\r\n\r\n", what


class GeminiArrayWire(GeminiWire):
    """``streamGenerateContent`` without ``alt=sse``: one JSON array, streamed element by element."""

    def stream_headers(self, rid: str) -> Headers:
        """JSON headers (the body is a JSON array)."""
        return JSON_HEADERS

    def malformed(self) -> bytes:
        """An array element that does not parse."""
        return b'[{"candidates": [{"content": {"par\r\n,'

    def frames(self, sim: Simulator, inp: ChatInput, reply: Reply, rid: str) -> Iterator[tuple[bytes, Frame]]:
        """``[`` element ``,`` element … ``]``."""
        first = True
        for frame, what in super().frames(sim, inp, reply, rid):
            element = frame[len(b"data: ") : -4]
            yield (b"[" if first else b",\r\n") + element, what
            first = False
        yield b"]", Frame.END


def _json_body(req: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise SimError(ErrorKind.BAD_REQUEST, f"Invalid JSON payload received. {exc}") from exc
    if not isinstance(body, dict):
        raise SimError(ErrorKind.BAD_REQUEST, "Invalid JSON payload received. Expected an object.")
    return body


WIRE = GeminiWire()
ARRAY_WIRE = GeminiArrayWire()


async def model_action(sim: Simulator, req: Request, send: Send, model: str, action: str) -> None:
    """Dispatch ``models/{model}:{action}``."""
    model = model.removeprefix("models/")
    if action == "generateContent" or (action == "streamGenerateContent" and req.query.get("alt") == "sse"):
        await serve_chat(sim, WIRE, req, send, new_id(""), path_model=model)
    elif action == "streamGenerateContent":
        await serve_chat(sim, ARRAY_WIRE, req, send, new_id(""), path_model=model)
    elif action in ("embedContent", "batchEmbedContents", "countTokens"):
        await _simple_action(sim, req, send, model, action)
    else:
        await send_error(send, WIRE, ErrorKind.NOT_FOUND, f"Method {action} is not found for models/{model}.")


async def _simple_action(sim: Simulator, req: Request, send: Send, model: str, action: str) -> None:
    try:
        WIRE.authenticate(sim, req)
        body = _json_body(req)
        profile = sim.profile(model)
        if action == "countTokens":
            request = _get(body, "generateContentRequest", "generate_content_request") or body
            req.body = orjson.dumps(request)
            tokens = sim.prompt_tokens(WIRE.parse(req, model))
            payload = orjson.dumps({"totalTokens": tokens})
        else:
            requests = body.get("requests") if action == "batchEmbedContents" else [body]
            if not isinstance(requests, list) or not requests:
                raise SimError(
                    ErrorKind.BAD_REQUEST, "* BatchEmbedContentsRequest.requests: must not be empty"
                )
            vectors = []
            for item in requests:
                text, _ = _parts_text(_get(item, "content", "content"))
                dim = _get(item, "outputDimensionality", "output_dimensionality") or profile.embedding_dim
                vectors.append({"values": embedding(text, int(dim), profile.embedding_mode)})
            result = {"embeddings": vectors} if action == "batchEmbedContents" else {"embedding": vectors[0]}
            payload = orjson.dumps(result)
    except REQUEST_ERRORS as exc:
        await send_request_error(send, WIRE, exc)
        return
    endpoint = "chat" if action == "countTokens" else "embeddings"
    await serve_simple(sim, WIRE, req, send, profile, endpoint, lambda: payload, new_id(""))


async def list_models(sim: Simulator, req: Request, send: Send) -> None:
    """``GET /v1beta/models``."""
    try:
        WIRE.authenticate(sim, req)
    except REQUEST_ERRORS as exc:
        await send_request_error(send, WIRE, exc)
        return
    models = [
        {
            "name": f"models/{name}",
            "displayName": name,
            "supportedGenerationMethods": [
                "generateContent",
                "streamGenerateContent",
                "countTokens",
                "embedContent",
            ],
        }
        for name in listed_models(sim.scenario)
    ]
    body = orjson.dumps({"models": models})
    await serve_simple(sim, WIRE, req, send, sim.server_profile(), "models", lambda: body, new_id(""))
