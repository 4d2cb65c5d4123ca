"""Domain errors. Each carries its HTTP status and a stable machine-readable code.

Raised anywhere below ``api/``; only ``api/`` renders them (as RFC 9457 problem+json).
Messages must never contain secrets: they are shown to clients.
"""

from __future__ import annotations

from typing import Any, ClassVar


class NexusError(Exception):
    """Base of every domain error."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class BadRequest(NexusError):
    status, code, title = 400, "bad_request", "Bad request"


class ValidationFailed(NexusError):
    status, code, title = 422, "validation_error", "Request validation failed"


class Unauthenticated(NexusError):
    status, code, title = 401, "unauthenticated", "Missing, invalid, expired or revoked API key"


class Forbidden(NexusError):
    status, code, title = 403, "forbidden", "Not allowed for this key"


class NotFound(NexusError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(NexusError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(NexusError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class RateLimited(NexusError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after_s: int = 1) -> None:
        super().__init__(detail, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


class Unavailable(NexusError):
    status, code, title = 503, "unavailable", "A backing service is unavailable"
