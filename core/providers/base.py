"""The ``Provider`` protocol and the HTTP plumbing every adapter shares.

Adapters are native async over one HTTP client injected by the caller (connection pooling is
shared, lifecycle is the caller's): an :class:`~core.providers.transport.Upstream` (the gateway
uses :class:`~core.providers.transport.AiohttpUpstream`) or any ``httpx.AsyncClient``. They make
exactly one attempt per call, and turn every failure into a :class:`ProviderError`.

Streams: an error before the first event is *raised* (so a caller can fall back to another
model with nothing sent to its client); an error after the stream started is *yielded* as a
final :class:`ErrorEvent`, so the consumer can end its own stream with an error.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx
import orjson
from pydantic import SecretStr

from core.providers.errors import ErrorKind, ProviderError, classify
from core.providers.settings import ProviderTimeouts
from core.providers.sse import SseEvent, error_event, iter_sse
from core.providers.transport import HttpxUpstream, Upstream, UpstreamError
from core.providers.types import (
    ChatRequest,
    ChatResponse,
    DoneEvent,
    EmbeddingRequest,
    EmbeddingResponse,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)


@runtime_checkable
class Provider(Protocol):
    """What every adapter (and the registry, for catalog ids) offers."""

    name: str

    async def chat(self, req: ChatRequest) -> ChatResponse:
        """One completion."""
        ...

    def stream(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """One completion as normalised events, ending with ``done`` or ``error``."""
        ...

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """Vectors for ``req.input``."""
        ...


class StreamParser(Protocol):
    """Turns one provider's SSE events into normalised events."""

    def feed(self, event: SseEvent) -> list[StreamEvent]:
        """Events for one SSE event; raise :class:`ProviderError` for in-stream errors."""
        ...

    def finish(self) -> list[StreamEvent]:
        """Called at end of input: the closing events, or raise ``truncated_stream``."""
        ...


def elapsed_ms(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` value)."""
    return round((time.perf_counter() - start) * 1000, 3)


def decode_json(content: bytes, provider: str) -> Any:
    """Parse a JSON body; invalid JSON is a retryable ``malformed_response``."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        raise ProviderError(
            ErrorKind.malformed_response, "response body is not valid JSON", provider=provider
        ) from None


def malformed(provider: str, what: str) -> ProviderError:
    """A ``malformed_response`` error for a body of the wrong shape."""
    return ProviderError(
        ErrorKind.malformed_response, f"unexpected response shape: {what}", provider=provider
    )


class HttpAdapter(abc.ABC):
    """Base of the adapters: URL, credentials, timeouts, one-shot POST and SSE streaming."""

    adapter: ClassVar[str] = "http"

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | Upstream,
        base_url: str,
        api_key: SecretStr | None = None,
        timeouts: ProviderTimeouts | None = None,
        name: str | None = None,
        default_max_tokens: int = 4096,
    ) -> None:
        self.client = client
        self.upstream: Upstream = client if isinstance(client, Upstream) else HttpxUpstream(client)
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeouts = timeouts or ProviderTimeouts()
        self.name = name or self.adapter
        self.default_max_tokens = default_max_tokens

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    @abc.abstractmethod
    async def chat(self, req: ChatRequest) -> ChatResponse:
        """One completion (``req.model`` is the upstream model name)."""

    @abc.abstractmethod
    def stream(self, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """One streamed completion."""

    @abc.abstractmethod
    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """Vectors for ``req.input``."""

    def _secret(self) -> str:
        return self._api_key.get_secret_value() if self._api_key is not None else ""

    def auth_headers(self) -> dict[str, str]:
        """Credential headers; overridden per protocol."""
        return {}

    def _headers(self, stream: bool) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            **self.auth_headers(),
        }

    def http_error(self, status: int, content: bytes, headers: Mapping[str, str]) -> ProviderError:
        """Classify an HTTP error answer."""
        try:
            body: Any = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = content[:500].decode("utf-8", "replace")
        err = classify(self.name, status, body, headers)
        err.message = _scrub(err.message, self._secret())
        return err

    def _transport_error(self, exc: UpstreamError, started: bool) -> ProviderError:
        if exc.timeout:
            what = "stream stalled" if started else exc.name
            return ProviderError(ErrorKind.timeout, f"upstream timeout ({what})", provider=self.name)
        if started:
            return ProviderError(ErrorKind.truncated_stream, f"stream broke: {exc.name}", provider=self.name)
        return ProviderError(ErrorKind.server, f"upstream unreachable: {exc.name}", provider=self.name)

    async def post_json(
        self, path: str, payload: dict[str, Any], params: dict[str, str] | None = None
    ) -> Any:
        """POST ``payload`` once and return the decoded JSON answer."""
        try:
            async with asyncio.timeout(self.timeouts.request_s):
                resp = await self.upstream.post(
                    self.base_url + path,
                    orjson.dumps(payload),
                    self._headers(stream=False),
                    params,
                    self.timeouts,
                )
        except TimeoutError:
            raise ProviderError(ErrorKind.timeout, "upstream timeout (request)", provider=self.name) from None
        except UpstreamError as exc:
            raise self._transport_error(exc, started=False) from None
        if resp.status >= 400:
            raise self.http_error(resp.status, resp.content, resp.headers)
        return decode_json(resp.content, self.name)

    async def stream_sse(
        self,
        path: str,
        payload: dict[str, Any],
        parser_factory: Callable[[], StreamParser],
        params: dict[str, str] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """POST once and yield normalised events (see the module docstring for error rules)."""
        start = time.perf_counter()
        first: float | None = None
        yielded = False
        try:
            async with self.upstream.stream(
                self.base_url + path,
                orjson.dumps(payload),
                self._headers(stream=True),
                params,
                self.timeouts,
            ) as resp:
                if resp.status >= 400:
                    raise self.http_error(resp.status, await resp.aread(), resp.headers)
                content_type = resp.headers.get("content-type", "")
                if "json" in content_type and "event-stream" not in content_type:
                    body = decode_json(await resp.aread(), self.name)
                    if isinstance(body, dict) and "error" in body:
                        raise classify(self.name, None, body)
                    raise malformed(self.name, "expected an event stream, got JSON")
                parser = parser_factory()
                try:
                    async for sse in iter_sse(resp.aiter_lines()):
                        for event in parser.feed(sse):
                            if first is None and isinstance(
                                event, TextDelta | ReasoningDelta | ToolCallDelta
                            ):
                                first = time.perf_counter()
                            yield _stamp(event, start, first)
                            yielded = True
                    for event in parser.finish():
                        yield _stamp(event, start, first)
                        yielded = True
                except UpstreamError as exc:
                    raise self._transport_error(exc, started=True) from None
        except ProviderError as err:
            if not yielded:
                raise
            yield error_event(err)
        except UpstreamError as exc:
            broken = self._transport_error(exc, started=yielded)
            if not yielded:
                raise broken from None
            yield error_event(broken)


def _stamp(event: StreamEvent, start: float, first: float | None) -> StreamEvent:
    if isinstance(event, DoneEvent):
        ttft = round((first - start) * 1000, 3) if first is not None else None
        return event.model_copy(update={"latency_ms": elapsed_ms(start), "ttft_ms": ttft})
    return event


def _scrub(message: str, secret: str) -> str:
    return message.replace(secret, "[redacted]") if secret else message
