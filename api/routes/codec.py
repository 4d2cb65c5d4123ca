"""Temporal remote codec endpoints for the Temporal web UI and CLI.

``POST /codec/encode`` and ``POST /codec/decode`` take and return protobuf-JSON ``Payloads``
(``{"payloads": [{"metadata": {"encoding": "<b64>"}, "data": "<b64>"}]}``), the shape the UI
and ``temporal --codec-endpoint`` send. Callers authenticate with a Bearer API key holding
``codec:use``. The browser calls cross-origin from the Temporal UI, so these routes answer
CORS preflights themselves and put CORS headers on every answer, errors included (otherwise
the UI shows a CORS failure instead of the real 401/403).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.deps import AppState, get_principal, get_state
from api.errors import problem
from core.config import Settings
from core.errors import BadRequest, Forbidden, NexusError
from core.identity import Permission
from core.temporal.client import make_codec
from core.temporal.codec import CodecKeyError

log = logging.getLogger("nexus.api.codec")
router = APIRouter(tags=["codec"])

ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
MAX_PAYLOADS = 1000


def allowed_origins(settings: Settings) -> set[str]:
    """The Temporal UI origin plus any explicitly configured ones."""
    origins = {o.rstrip("/") for o in settings.api.cors_origins}
    if settings.temporal.ui_url:
        origins.add(settings.temporal.ui_url.rstrip("/"))
    return origins


def _cors(request: Request, state: AppState, response: Response) -> Response:
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") in allowed_origins(state.settings):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
    return response


@router.options("/codec/{operation}", include_in_schema=False)
async def preflight(operation: str, request: Request) -> Response:
    """CORS preflight from the Temporal UI (no credentials are sent on a preflight)."""
    state = await get_state(request)
    response = Response(status_code=204)
    if operation in ("encode", "decode"):
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    return _cors(request, state, response)


async def _run(request: Request, operation: str) -> Response:
    state = await get_state(request)
    try:
        principal = await get_principal(request, state)
        principal.require(Permission.codec)
        namespace = request.headers.get("x-namespace")
        if namespace is not None and namespace != state.settings.temporal.namespace:
            raise Forbidden("this codec serves another namespace")
        try:
            body = json_format.Parse(await request.body(), Payloads())
        except json_format.ParseError as exc:
            raise BadRequest("body must be protobuf-JSON Payloads") from exc
        if len(body.payloads) > MAX_PAYLOADS:
            raise BadRequest(f"at most {MAX_PAYLOADS} payloads per request")
        codec = make_codec(state.settings.security)
        try:
            if operation == "encode":
                result = await codec.encode(body.payloads)
            else:
                result = await codec.decode(body.payloads)
        except CodecKeyError as exc:
            raise BadRequest("payload was encrypted with an unknown key") from exc
        except Exception as exc:  # InvalidTag and friends: say nothing about the key material
            log.warning("codec %s failed: %s", operation, type(exc).__name__)
            raise BadRequest("payload could not be decoded") from exc
    except NexusError as exc:
        response: Response = problem(exc.status, exc.code, exc.title, exc.detail, request)
        return _cors(request, state, response)
    out = Response(
        content=json_format.MessageToJson(Payloads(payloads=result)),
        media_type="application/json",
    )
    return _cors(request, state, out)


@router.post("/codec/encode")
async def encode(request: Request) -> Response:
    """Encrypt payloads with the active key (``Authorization: Bearer`` with ``codec:use``)."""
    return await _run(request, "encode")


@router.post("/codec/decode")
async def decode(request: Request) -> Response:
    """Decrypt payloads (any known key id); unencrypted payloads pass through unchanged."""
    return await _run(request, "decode")
