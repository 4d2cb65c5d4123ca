"""One error taxonomy for every provider, and its mapping to Temporal ``ApplicationError``.

Adapters never retry: they raise :class:`ProviderError` with a ``kind`` and a ``retryable``
flag, and Temporal (activities) or the gateway's fallback logic decide what to do. Messages
are scrubbed of anything that looks like a credential before they are stored.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from temporalio.exceptions import ApplicationError


class ErrorKind(StrEnum):
    auth = "auth"
    permission = "permission"
    not_found = "not_found"
    bad_request = "bad_request"
    context_length = "context_length"
    content_filter = "content_filter"
    rate_limit = "rate_limit"
    overloaded = "overloaded"
    timeout = "timeout"
    server = "server"
    malformed_response = "malformed_response"
    truncated_stream = "truncated_stream"


RETRYABLE_KINDS = frozenset(
    {
        ErrorKind.rate_limit,
        ErrorKind.overloaded,
        ErrorKind.timeout,
        ErrorKind.server,
        ErrorKind.malformed_response,
        ErrorKind.truncated_stream,
    }
)

# The status the gateway should answer with when it gives up (upstream credential problems
# are ours, not the client's, hence 502).
GATEWAY_STATUS: dict[ErrorKind, int] = {
    ErrorKind.auth: 502,
    ErrorKind.permission: 502,
    ErrorKind.not_found: 404,
    ErrorKind.bad_request: 400,
    ErrorKind.context_length: 400,
    ErrorKind.content_filter: 400,
    ErrorKind.rate_limit: 429,
    ErrorKind.overloaded: 503,
    ErrorKind.timeout: 504,
    ErrorKind.server: 502,
    ErrorKind.malformed_response: 502,
    ErrorKind.truncated_stream: 502,
}

_SECRET_PATTERNS = [
    re.compile(
        r"(?i)\b(bearer|api[-_ ]?key|x-api-key|x-goog-api-key|key)([\s:=\"']+)(?=[A-Za-z._\-]*\d)[A-Za-z0-9._\-]{8,}"
    ),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{10,}"),
    re.compile(r"\bnx_[0-9a-f]{6,}_[A-Za-z0-9_\-]+"),
]
_MAX_MESSAGE = 500


def redact(text: str, *secrets: str) -> str:
    """Remove credentials (given ones and anything key-shaped) and cap the length."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) + m.group(2) if m.lastindex else "") + "[redacted]", text)
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"


class ProviderError(Exception):
    """A failed provider call, classified. The message never contains credentials."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retry_after_s: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.kind = kind
        self.message = redact(message)
        self.provider = provider
        self.status = status
        self.retry_after_s = retry_after_s
        self.retryable = kind in RETRYABLE_KINDS if retryable is None else retryable
        super().__init__(f"{provider or 'provider'} {kind.value}: {self.message}")

    def __repr__(self) -> str:
        return (
            f"ProviderError(kind={self.kind.value!r}, provider={self.provider!r}, status={self.status!r}, "
            f"retryable={self.retryable!r}, retry_after_s={self.retry_after_s!r}, message={self.message!r})"
        )

    @property
    def gateway_status(self) -> int:
        """HTTP status a gateway should answer with for this error."""
        return GATEWAY_STATUS[self.kind]

    def to_application_error(self) -> ApplicationError:
        """The Temporal error an activity raises: typed by kind, retryable or not, with delay."""
        delay = dt.timedelta(seconds=self.retry_after_s) if self.retry_after_s else None
        return ApplicationError(
            str(self),
            {"provider": self.provider, "status": self.status, "kind": self.kind.value},
            type=self.kind.value,
            non_retryable=not self.retryable,
            next_retry_delay=delay,
        )


def parse_retry_after(headers: Mapping[str, str], now: dt.datetime | None = None) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or HTTP date), ``retry-after-ms``,
    OpenAI ``x-ratelimit-reset-*`` durations or Anthropic ``anthropic-ratelimit-*-reset`` times."""
    now = now or dt.datetime.now(dt.UTC)
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    if (ms := lower.get("retry-after-ms")) and _is_number(ms):
        return max(0.0, float(ms) / 1000)
    if value := lower.get("retry-after"):
        if _is_number(value):
            return max(0.0, float(value))
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            return max(0.0, (when - now).total_seconds())
    exhausted: list[float] = []
    known: list[float] = []
    for name, raw in lower.items():
        delay: float | None = None
        if name.startswith("x-ratelimit-reset-"):
            delay = _parse_duration(raw)
            remaining = lower.get(name.replace("reset", "remaining", 1))
        elif name.startswith("anthropic-ratelimit-") and name.endswith("-reset"):
            delay = _parse_timestamp(raw, now)
            remaining = lower.get(name[: -len("reset")] + "remaining")
        else:
            continue
        if delay is None:
            continue
        known.append(delay)
        if remaining == "0":
            exhausted.append(delay)
    pool = exhausted or known
    return max(pool) if pool else None


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _parse_duration(value: str) -> float | None:
    """OpenAI's reset durations: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``."""
    if _is_number(value):
        return float(value)
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def _parse_timestamp(value: str, now: dt.datetime) -> float | None:
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


_CONTEXT_HINTS = (
    "context_length_exceeded",
    "context length",
    "context_length",
    "context window",
    "context size",
    "exceed_context",
    "prompt is too long",
    "input is too long",
    "too many tokens",
    "maximum number of tokens",
    "maximum context",
    "reduce the length",
)
_FILTER_HINTS = ("content_filter", "content_policy", "content management policy", "safety", "moderation")
_AUTH_HINTS = ("api key not valid", "api_key_invalid", "invalid_api_key", "invalid api key")


def error_text(body: Any) -> tuple[str, str]:
    """(message, code/type) from a provider error body (OpenAI, Anthropic, Gemini, Mistral, Ollama)."""
    if isinstance(body, list) and body:
        body = body[0]  # Gemini streams wrap errors in a list
    if not isinstance(body, dict):
        return (str(body) if body else "", "")
    err = body.get("error", body)
    if isinstance(err, str):
        return err, str(body.get("type") or body.get("code") or "")
    if not isinstance(err, dict):
        return str(err), ""
    message = err.get("message") or err.get("detail") or body.get("detail") or ""
    if not isinstance(message, str):
        message = str(message)
    code_parts = [err.get("code"), err.get("type"), err.get("status")]
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and detail.get("reason"):
            code_parts.append(detail["reason"])
    return message, " ".join(str(c) for c in code_parts if c not in (None, ""))


def classify(
    provider: str,
    status: int | None,
    body: Any,
    headers: Mapping[str, str] | None = None,
) -> ProviderError:
    """Map an HTTP status and error body (or an in-stream error body) to a :class:`ProviderError`."""
    message, code = error_text(body)
    hay = f"{code} {message}".lower()
    retry_after = parse_retry_after(headers) if headers is not None else None
    if retry_after is None:
        retry_after = _retry_info(body)
    kind = _kind_for(status, hay)
    retryable: bool | None = None
    if kind is ErrorKind.rate_limit and ("insufficient_quota" in hay or "billing" in hay):
        retryable = False  # out of credit: waiting will not help
    text = message or (f"HTTP {status}" if status else "provider error")
    return ProviderError(
        kind,
        text,
        provider=provider,
        status=status,
        retry_after_s=retry_after if kind in (ErrorKind.rate_limit, ErrorKind.overloaded) else None,
        retryable=retryable,
    )


def _retry_info(body: Any) -> float | None:
    """Gemini's ``google.rpc.RetryInfo`` detail (``"retryDelay": "7s"``) in an error body."""
    err = body.get("error") if isinstance(body, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str):
            return _parse_duration(delay)
    return None


def _kind_for(status: int | None, hay: str) -> ErrorKind:
    if "overloaded" in hay or status == 529:
        return ErrorKind.overloaded
    if any(h in hay for h in _AUTH_HINTS) or status == 401 or "authentication_error" in hay:
        return ErrorKind.auth
    if any(h in hay for h in _CONTEXT_HINTS) and (status is None or 400 <= status < 500):
        return ErrorKind.context_length
    if status in (402, 403) or "permission" in hay:
        return ErrorKind.permission
    if status == 404 or "not_found" in hay:
        return ErrorKind.not_found
    if status == 429 or "rate_limit" in hay or "resource_exhausted" in hay:
        return ErrorKind.rate_limit
    if any(h in hay for h in _FILTER_HINTS) and (status is None or 400 <= status < 500):
        return ErrorKind.content_filter
    if status in (408, 504) or "deadline_exceeded" in hay or "timeout" in hay:
        return ErrorKind.timeout
    if status == 503 or "unavailable" in hay:
        return ErrorKind.overloaded
    if status is not None and 400 <= status < 500 and status != 409:
        return ErrorKind.bad_request
    if status is None and ("invalid_request" in hay or "invalid_argument" in hay):
        return ErrorKind.bad_request
    return ErrorKind.server
