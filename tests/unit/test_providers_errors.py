"""Error taxonomy: recorded status/body pairs of each provider mapped through the real adapters
(httpx.MockTransport), Retry-After parsing, Temporal ApplicationError, no secrets in messages."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from core.providers.anthropic import AnthropicAdapter
from core.providers.base import HttpAdapter
from core.providers.deepseek import DeepSeekAdapter
from core.providers.errors import ErrorKind, ProviderError, parse_retry_after, redact
from core.providers.gemini import GeminiAdapter
from core.providers.mistral import MistralAdapter
from core.providers.openai import OpenAIAdapter
from core.providers.openai_compatible import OpenAICompatibleAdapter
from core.providers.settings import ProviderTimeouts
from core.providers.types import ChatRequest, Message

KEY = "sk-live-SECRET0123456789abcdef"
REQ = ChatRequest(model="m", messages=[Message(role="user", content="hi")])

OPENAI_CTX = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
OPENAI_AUTH = {
    "error": {
        "message": f"Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
OPENAI_429 = {
    "error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "code": "rate_limit_exceeded"}
}
OPENAI_QUOTA = {
    "error": {
        "message": "You exceeded your current quota",
        "type": "insufficient_quota",
        "code": "insufficient_quota",
    }
}
OPENAI_FILTER = {"error": {"message": "The response was filtered", "type": None, "code": "content_filter"}}
OPENAI_404 = {
    "error": {
        "message": "The model `gpt-9` does not exist",
        "type": "invalid_request_error",
        "code": "model_not_found",
    }
}
ANTHROPIC = {
    400: {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    },
    401: {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
    403: {"type": "error", "error": {"type": "permission_error", "message": "no access"}},
    404: {"type": "error", "error": {"type": "not_found_error", "message": "model: claude-9"}},
    429: {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit"},
    },
    500: {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
    529: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
}
ANTHROPIC_CTX = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "prompt is too long: 208310 tokens > 200000 maximum",
    },
}
GEMINI_KEY = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    }
}
GEMINI_CTX = {
    "error": {
        "code": 400,
        "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        "status": "INVALID_ARGUMENT",
    }
}
GEMINI_429 = {
    "error": {
        "code": 429,
        "message": "Resource has been exhausted (e.g. check quota).",
        "status": "RESOURCE_EXHAUSTED",
    }
}
GEMINI_503 = {
    "error": {
        "code": 503,
        "message": "The model is overloaded. Please try again later.",
        "status": "UNAVAILABLE",
    }
}
GEMINI_504 = {
    "error": {
        "code": 504,
        "message": "Deadline expired before operation could complete.",
        "status": "DEADLINE_EXCEEDED",
    }
}
GEMINI_403 = {"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}
MISTRAL_CTX = {
    "object": "error",
    "message": "Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum context length",
    "type": "invalid_request_message_error",
    "param": None,
    "code": None,
}
MISTRAL_422 = {
    "detail": [{"type": "extra_forbidden", "loc": ["body", "foo"], "msg": "Extra inputs are not permitted"}]
}
DEEPSEEK_402 = {
    "error": {
        "message": "Insufficient Balance",
        "type": "unknown_error",
        "param": None,
        "code": "invalid_request_error",
    }
}
VLLM_CTX = {
    "object": "error",
    "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
    "type": "BadRequestError",
    "code": 400,
}
LLAMACPP_CTX = {
    "error": {
        "code": 400,
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error",
    }
}
OLLAMA_404 = {"error": "model 'llama9' not found, try pulling it first"}


def adapter(cls: type[HttpAdapter], handler: Any) -> HttpAdapter:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return cls(client=client, base_url="http://upstream.test/v1", api_key=SecretStr(KEY), name=cls.adapter)


def answering(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, (bytes, str)):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handler


CASES = [
    (OpenAIAdapter, 400, OPENAI_CTX, ErrorKind.context_length, False),
    (OpenAIAdapter, 401, OPENAI_AUTH, ErrorKind.auth, False),
    (
        OpenAIAdapter,
        403,
        {"error": {"message": "Country not supported", "code": "unsupported_country_region_territory"}},
        ErrorKind.permission,
        False,
    ),
    (OpenAIAdapter, 404, OPENAI_404, ErrorKind.not_found, False),
    (
        OpenAIAdapter,
        400,
        {"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error"}},
        ErrorKind.bad_request,
        False,
    ),
    (OpenAIAdapter, 400, OPENAI_FILTER, ErrorKind.content_filter, False),
    (OpenAIAdapter, 429, OPENAI_429, ErrorKind.rate_limit, True),
    (OpenAIAdapter, 429, OPENAI_QUOTA, ErrorKind.rate_limit, False),
    (
        OpenAIAdapter,
        500,
        {"error": {"message": "The server had an error", "type": "server_error"}},
        ErrorKind.server,
        True,
    ),
    (OpenAIAdapter, 502, b"<html>Bad gateway</html>", ErrorKind.server, True),
    (
        OpenAIAdapter,
        503,
        {"error": {"message": "The engine is currently overloaded", "type": "server_error"}},
        ErrorKind.overloaded,
        True,
    ),
    (AnthropicAdapter, 400, ANTHROPIC[400], ErrorKind.bad_request, False),
    (AnthropicAdapter, 400, ANTHROPIC_CTX, ErrorKind.context_length, False),
    (AnthropicAdapter, 401, ANTHROPIC[401], ErrorKind.auth, False),
    (AnthropicAdapter, 403, ANTHROPIC[403], ErrorKind.permission, False),
    (AnthropicAdapter, 404, ANTHROPIC[404], ErrorKind.not_found, False),
    (AnthropicAdapter, 429, ANTHROPIC[429], ErrorKind.rate_limit, True),
    (AnthropicAdapter, 500, ANTHROPIC[500], ErrorKind.server, True),
    (AnthropicAdapter, 529, ANTHROPIC[529], ErrorKind.overloaded, True),
    (GeminiAdapter, 400, GEMINI_KEY, ErrorKind.auth, False),
    (GeminiAdapter, 400, GEMINI_CTX, ErrorKind.context_length, False),
    (GeminiAdapter, 403, GEMINI_403, ErrorKind.permission, False),
    (GeminiAdapter, 429, GEMINI_429, ErrorKind.rate_limit, True),
    (GeminiAdapter, 503, GEMINI_503, ErrorKind.overloaded, True),
    (GeminiAdapter, 504, GEMINI_504, ErrorKind.timeout, True),
    (MistralAdapter, 400, MISTRAL_CTX, ErrorKind.context_length, False),
    (MistralAdapter, 422, MISTRAL_422, ErrorKind.bad_request, False),
    (MistralAdapter, 401, {"message": "Unauthorized", "request_id": "x"}, ErrorKind.auth, False),
    (DeepSeekAdapter, 402, DEEPSEEK_402, ErrorKind.permission, False),
    (
        DeepSeekAdapter,
        503,
        {"error": {"message": "Server overloaded", "type": "server_error"}},
        ErrorKind.overloaded,
        True,
    ),
    (OpenAICompatibleAdapter, 400, VLLM_CTX, ErrorKind.context_length, False),
    (OpenAICompatibleAdapter, 400, LLAMACPP_CTX, ErrorKind.context_length, False),
    (OpenAICompatibleAdapter, 404, OLLAMA_404, ErrorKind.not_found, False),
]


@pytest.mark.parametrize(("cls", "status", "body", "kind", "retryable"), CASES)
async def test_http_errors_map_to_taxonomy(
    cls: type[HttpAdapter], status: int, body: Any, kind: ErrorKind, retryable: bool
) -> None:
    provider = adapter(cls, answering(status, body))
    with pytest.raises(ProviderError) as info:
        await provider.chat(REQ)
    err = info.value
    assert (err.kind, err.retryable, err.status, err.provider) == (kind, retryable, status, cls.adapter)
    assert KEY not in str(err)
    assert KEY not in repr(err)
    # the streaming path maps the same answer the same way, before any event
    with pytest.raises(ProviderError) as streamed:
        async for _ in provider.stream(REQ):
            pass
    assert streamed.value.kind is kind


async def test_rate_limit_carries_retry_after_into_temporal_error() -> None:
    provider = adapter(OpenAIAdapter, answering(429, OPENAI_429, {"retry-after": "7"}))
    with pytest.raises(ProviderError) as info:
        await provider.chat(REQ)
    app = info.value.to_application_error()
    assert info.value.retry_after_s == 7
    assert app.type == "rate_limit"
    assert app.non_retryable is False
    assert app.next_retry_delay == dt.timedelta(seconds=7)
    auth = ProviderError(ErrorKind.auth, "bad key", provider="openai").to_application_error()
    assert auth.type == "auth"
    assert auth.non_retryable is True
    assert auth.next_retry_delay is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "6m0s",
                "x-ratelimit-reset-tokens": "20ms",
            },
            360.0,
        ),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "1h2m3.5s"}, 3723.5),
        (
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2015-10-21T07:28:45Z",
                "anthropic-ratelimit-tokens-reset": "2015-10-21T07:30:00Z",
            },
            45.0,
        ),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = dt.datetime(2015, 10, 21, 7, 28, 0, tzinfo=dt.UTC)
    assert parse_retry_after(headers, now=now) == expected


async def test_transport_failures() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ProviderError) as info:
        await adapter(OpenAIAdapter, refuse).chat(REQ)
    assert info.value.kind is ErrorKind.server
    assert info.value.retryable
    with pytest.raises(ProviderError) as info:
        await adapter(AnthropicAdapter, stall).chat(REQ)
    assert info.value.kind is ErrorKind.timeout
    assert info.value.retryable


async def test_whole_request_timeout_from_settings() -> None:
    import asyncio

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1)
        return httpx.Response(200, json={})

    client = httpx.AsyncClient(transport=httpx.MockTransport(slow))
    provider = OpenAIAdapter(client=client, base_url="http://u/v1", timeouts=ProviderTimeouts(request_s=0.05))
    with pytest.raises(ProviderError) as info:
        await provider.chat(REQ)
    assert info.value.kind is ErrorKind.timeout


@pytest.mark.parametrize("cls", [OpenAIAdapter, AnthropicAdapter, GeminiAdapter])
async def test_invalid_json_is_malformed_response(cls: type[HttpAdapter]) -> None:
    provider = adapter(cls, answering(200, b'{"id": "x", "choices": [', {"content-type": "application/json"}))
    with pytest.raises(ProviderError) as info:
        await provider.chat(REQ)
    assert info.value.kind is ErrorKind.malformed_response
    assert info.value.retryable
    wrong_shape = adapter(cls, answering(200, {"unexpected": True}))
    with pytest.raises(ProviderError) as info:
        await wrong_shape.chat(REQ)
    assert info.value.kind is ErrorKind.malformed_response


def test_redaction_and_repr_never_show_keys() -> None:
    text = "bad key sk-proj-abcdef123456 and AIzaSyA1234567890abcdef and Bearer abc123def456ghi"
    cleaned = redact(text)
    assert "sk-proj" not in cleaned
    assert "AIza" not in cleaned
    assert "abc123def456" not in cleaned
    assert "Incorrect API key provided" in redact("Incorrect API key provided: sk-abcdefgh1234")
    err = ProviderError(ErrorKind.auth, f"token {KEY}", provider="openai")
    assert KEY not in repr(err)
    assert KEY not in str(err)
    assert KEY not in str(err.to_application_error())
    provider = adapter(OpenAIAdapter, answering(200, {}))
    assert KEY not in repr(provider)
