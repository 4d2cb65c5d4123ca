"""Helpers for the approval API and console tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.db.models import User
from core.identity import Role
from core.keys_service import create_tenant, get_tenant, issue_key


def ensure_approval_routes(app: FastAPI) -> None:
    """Mount the approvals router and the console on ``app`` unless ``create_app`` already does.

    A no-op once ``api/app.py`` includes them (see the change request in docs/approvals.md).
    """
    from api import console
    from api.routes import approvals

    paths = {getattr(r, "path", "") for r in app.router.routes}
    if "/v1/approvals" not in paths:
        app.include_router(approvals.router, prefix="/v1")
    if "/console/approvals" not in paths:
        console.mount(app)


@contextlib.asynccontextmanager
async def approvals_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A fresh app (with the approval routes and console) and an in-process client for it."""
    from asgi_lifespan import LifespanManager

    from api.app import create_app

    application = create_app(settings)
    ensure_approval_routes(application)
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
            yield application, http


async def user_key(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    tenant_id: str,
    email: str,
    role: str,
) -> str:
    """A user row in ``tenant_id`` and a key bound to it; returns the full key."""
    assert settings.security.key_pepper is not None
    async with sessions() as session, session.begin():
        if await get_tenant(session, tenant_id) is None:
            await create_tenant(session, tenant_id=tenant_id, name=tenant_id)
        user = User(tenant_id=tenant_id, email=email, name=email, role=role)
        session.add(user)
        await session.flush()
        _, full = await issue_key(
            session,
            tenant_id=tenant_id,
            role=Role(role),
            name=email,
            scopes=None,
            expires_at=None,
            created_by="test",
            pepper=settings.security.key_pepper.get_secret_value(),
            user_id=user.id,
        )
    return full
