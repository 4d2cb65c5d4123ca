"""The console's approval inbox: server-rendered pages (Jinja2, autoescape) enhanced by htmx.

Browser auth: ``/console/login`` takes an API key and keeps it in an HttpOnly,
SameSite=Strict cookie scoped to ``/console`` (Secure on https); it never appears in a URL or
in script-readable storage. Every POST must carry the session's CSRF token (double submit:
the ``nexus_console_csrf`` cookie and an ``X-CSRF-Token`` header or ``csrf_token`` field).
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader
from starlette.templating import Jinja2Templates

from api.auth import authenticate
from api.console.markdown import render
from api.deps import SessionDep, StateDep, TemporalDep
from api.routes.approvals import ApprovalOut, DecisionBody, decide, inbox, visible
from core import events
from core.approvals.contracts import Decision, approval_workflow_id
from core.errors import Forbidden, NexusError, Unauthenticated
from core.identity import Principal

KEY_COOKIE = "nexus_console_key"
CSRF_COOKIE = "nexus_console_csrf"
COOKIE_PATH = "/console"
HERE = Path(__file__).parent

_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
_env.filters["markdown"] = render
templates = Jinja2Templates(env=_env)
router = APIRouter(prefix="/console", include_in_schema=False)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    """No valid console session: the browser is sent to the login page."""


def _page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=COOKIE_PATH,
    )


async def console_principal(request: Request, state: StateDep) -> Principal:
    """Authenticate the key held in the session cookie exactly as a Bearer header would be."""
    key = request.cookies.get(KEY_COOKIE)
    if not key:
        raise LoginRequired
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
    scope = {**request.scope, "headers": [*headers, (b"authorization", f"Bearer {key}".encode())]}
    scope.pop("nexus.principal", None)
    try:
        return await authenticate(Request(scope), state)
    except Unauthenticated as exc:
        raise LoginRequired from exc


ConsolePrincipal = Annotated[Principal, Depends(console_principal)]


def _csrf_ok(request: Request, submitted: str | None) -> bool:
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = request.headers.get("x-csrf-token") or submitted or ""
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


def require_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a POST whose CSRF token does not match the session's cookie."""
    if not _csrf_ok(request, submitted):
        raise Forbidden("missing or invalid CSRF token")


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    """The login form (issues a pre-session CSRF token)."""
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = _page(request, "login.html", {"csrf": token, "error": None})
    _set_cookie(request, response, CSRF_COOKIE, token)
    return response


@router.post("/login", response_model=None)
async def login(
    request: Request,
    state: StateDep,
    api_key: Annotated[str, Form(max_length=300)],
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Check the key, then start a session: key cookie plus a fresh CSRF token."""
    if not _csrf_ok(request, csrf_token):
        return _page(request, "login.html", {"csrf": csrf_token, "error": "Session expired, try again."}, 403)
    scope = {**request.scope, "headers": [(b"authorization", f"Bearer {api_key.strip()}".encode())]}
    scope.pop("nexus.principal", None)
    try:
        await authenticate(Request(scope), state)
    except Unauthenticated:
        token = request.cookies.get(CSRF_COOKIE, "")
        return _page(request, "login.html", {"csrf": token, "error": "Invalid API key."}, 401)
    response = RedirectResponse("/console/approvals", status_code=303)
    _set_cookie(request, response, KEY_COOKIE, api_key.strip())
    _set_cookie(request, response, CSRF_COOKIE, secrets.token_urlsafe(32))
    return response


@router.post("/logout")
async def logout(request: Request, csrf_token: Annotated[str, Form(max_length=100)] = "") -> Response:
    """End the session (CSRF-protected, so a third party cannot log the user out)."""
    require_csrf(request, csrf_token)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path=COOKIE_PATH)
    response.delete_cookie(CSRF_COOKIE, path=COOKIE_PATH)
    return response


@router.get("", include_in_schema=False)
async def console_home() -> RedirectResponse:
    return RedirectResponse("/console/approvals", status_code=303)


@router.get("/approvals", response_class=HTMLResponse)
async def inbox_page(
    request: Request, session: SessionDep, principal: ConsolePrincipal, view: str = "pending"
) -> HTMLResponse:
    """Pending approvals for the caller, or the history of decided ones."""
    history = view == "history"
    page = await inbox(session, principal, None if history else "pending", 100, None)
    items = [a for a in page.data if a.status != "pending"] if history else page.data
    return _page(request, "inbox.html", _context(request, principal, items=items, history=history))


@router.get("/approvals/{approval_id}", response_class=HTMLResponse)
async def approval_page(
    approval_id: str, request: Request, session: SessionDep, principal: ConsolePrincipal
) -> HTMLResponse:
    """One approval: rendered context, decision form, timeline."""
    approval = await visible(session, principal, approval_id)
    timeline = await events.stored_events(
        session,
        tenant_id=principal.tenant_id,
        workflow_id=approval_workflow_id(principal.tenant_id, approval_id),
    )
    context = _context(request, principal, approval=approval, timeline=timeline, error=None)
    return _page(request, "detail.html", context)


@router.post("/approvals/{approval_id}/decision", response_model=None)
async def decision_post(
    approval_id: str,
    request: Request,
    session: SessionDep,
    principal: ConsolePrincipal,
    temporal: TemporalDep,
    decision: Annotated[Decision, Form()],
    comment: Annotated[str, Form(max_length=10_000)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Decide from the console; htmx swaps in the decision panel, plain forms get a redirect."""
    require_csrf(request, csrf_token)
    error: str | None = None
    try:
        approval = await decide(
            session, principal, temporal, approval_id, DecisionBody(decision=decision, comment=comment)
        )
    except NexusError as exc:
        if exc.status == 404:
            raise
        error = exc.detail
        approval = await visible(session, principal, approval_id)
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/console/approvals/{approval_id}", status_code=303)
    return _page(request, "_decision.html", _context(request, principal, approval=approval, error=error))


def _context(request: Request, principal: Principal, **extra: Any) -> dict[str, Any]:
    return {"csrf": request.cookies.get(CSRF_COOKIE, ""), "principal": principal, **extra}


def decision_label(approval: ApprovalOut) -> str:
    """Human label of an approval's outcome, for templates."""
    if approval.decision and "decision" in approval.decision:
        return str(approval.decision["decision"]).replace("_", " ")
    if approval.decision and "on_timeout" in approval.decision:
        return f"timed out ({approval.decision['on_timeout']})"
    return approval.status.replace("_", " ")


_env.globals["decision_label"] = decision_label
