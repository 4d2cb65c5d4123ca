"""The web console (server-rendered, no build step): approval inbox. Mount with :func:`mount`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def mount(app: FastAPI) -> None:
    """Add the console routes, its static files under ``/console/static`` and the login redirect."""
    from api.console.routes import LoginRequired, router

    async def _login_required(request: Request, exc: Exception) -> Response:
        if request.headers.get("hx-request") == "true":  # htmx follows HX-Redirect, not a 303
            return Response(status_code=204, headers={"HX-Redirect": "/console/login"})
        return RedirectResponse("/console/login", status_code=303)

    app.add_exception_handler(LoginRequired, _login_required)
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
