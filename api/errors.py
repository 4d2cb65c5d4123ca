"""Render every error as RFC 9457 problem+json with a stable ``code``; never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import NexusError

log = logging.getLogger("nexus.api")

PROBLEM = "application/problem+json"
OPENAI_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/messages")
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://nexusai.dev/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    body.update(extra)
    if request is not None and request.url.path.startswith(OPENAI_PATHS):
        # OpenAI SDKs read ``error``; problem+json allows extension members, so carry both.
        body["error"] = {
            "message": detail or title,
            "type": _OPENAI_TYPES.get(status, "api_error"),
            "param": None,
            "code": code,
        }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    cleaned = []
    for err in errors:
        # Never echo the submitted value back (it may be a secret or huge).
        cleaned.append({"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")})
    return cleaned


def nexus_problem(request: Request, exc: NexusError) -> JSONResponse:
    """The problem+json answer for a domain error (``Retry-After`` when it carries one)."""
    headers = None
    retry = exc.extra.get("retry_after_s")
    if retry is not None:
        headers = {"Retry-After": str(retry)}
    extra = {k: v for k, v in exc.extra.items() if k != "retry_after_s"}
    return problem(exc.status, exc.code, exc.title, exc.detail, request, headers, **extra)


def validation_problem(request: Request, errors: Any) -> JSONResponse:
    """The answer for a request that does not match its schema (pydantic-style ``errors``)."""
    # OpenAI and Anthropic answer malformed or unknown parameters with 400; their SDKs expect it.
    status = 400 if request.url.path.startswith(OPENAI_PATHS) else 422
    return problem(
        status,
        "validation_error",
        "Request validation failed",
        "the request body or parameters do not match the schema",
        request,
        errors=_clean_errors(errors),
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(NexusError)
    async def _nexus(request: Request, exc: NexusError) -> JSONResponse:
        return nexus_problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(request, exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem(exc.status_code, code, detail or code.replace("_", " "), None, request)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem(500, "internal_error", "Internal error", None, request)
