"""Operator commands that act on the configured services directly (no running stack needed).

``nexus api`` / ``nexus worker`` are how production runs: they use whatever the settings point
to (a Temporal cluster, managed Postgres, a Redis cluster) and never start embedded servers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.config import Settings

if TYPE_CHECKING:
    from core.governance.audit_verify import VerifyResult


def exit_now(code: int) -> None:
    """Leave without running interpreter teardown (temporalio can crash there: sdk-python#300)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_api(settings: Settings) -> None:
    """Serve the FastAPI app with uvicorn on ``settings.api.host:settings.ports.api``."""
    import uvicorn

    from api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.ports.api,
        log_config=None,  # core.logging configures the root logger (JSON) in create_app
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


def run_worker(settings: Settings, queues: list[str] | None) -> int:
    """Serve Temporal task queues until SIGTERM/SIGINT (then drain)."""
    import logging

    from core.logging import configure_logging
    from workers.main import run_worker as serve

    configure_logging(settings)
    try:
        asyncio.run(serve(settings, queues or None))
    except Exception:
        logging.getLogger("nexus.worker").exception("worker failed")
        return 1
    return 0


def migrate(settings: Settings) -> None:
    from core.db.migrate import upgrade

    upgrade(settings.database.url)


@dataclass
class IssuedKey:
    key_id: str
    tenant_id: str
    role: str
    full_key: str
    tenant_created: bool


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 1."""


async def create_key(
    settings: Settings,
    *,
    tenant: str,
    role: str,
    name: str,
    scopes: list[str] | None,
    expires_in_days: int | None,
    create_tenant: bool,
    platform: bool = False,
) -> IssuedKey:
    """Issue a key straight in the database and record it in the audit log (actor ``cli:<user>``)."""
    from core.db.engine import make_engine, make_sessionmaker
    from core.governance import audit
    from core.identity import Role
    from core.keys_service import create_tenant as insert_tenant
    from core.keys_service import get_tenant, issue_key

    try:
        role_value = Role(role)
    except ValueError:
        raise CliError(f"unknown role {role!r}; one of: {', '.join(r.value for r in Role)}") from None
    assert settings.security.key_pepper is not None
    actor = f"cli:{getpass.getuser()}"
    expires_at = (
        dt.datetime.now(dt.UTC) + dt.timedelta(days=expires_in_days) if expires_in_days is not None else None
    )
    engine = make_engine(settings.database)
    try:
        sessions = make_sessionmaker(engine)
        async with sessions() as session, session.begin():
            created = False
            if await get_tenant(session, tenant) is None:
                if not create_tenant:
                    raise CliError(f"tenant {tenant!r} does not exist (pass --create-tenant to create it)")
                await insert_tenant(session, tenant_id=tenant, name=tenant, is_platform=platform)
                await audit.append(
                    session,
                    actor=actor,
                    action="tenant.create",
                    tenant_id=tenant,
                    target=f"tenant:{tenant}",
                    data={"is_platform": platform},
                )
                created = True
            key, full = await issue_key(
                session,
                tenant_id=tenant,
                role=role_value,
                name=name,
                scopes=scopes,
                expires_at=expires_at,
                created_by=actor,
                pepper=settings.security.key_pepper.get_secret_value(),
            )
            data: dict[str, Any] = {"role": key.role, "name": key.name, "scopes": scopes}
            if expires_at is not None:
                data["expires_at"] = expires_at.isoformat()
            await audit.append(
                session, actor=actor, action="key.create", tenant_id=tenant, target=f"key:{key.id}", data=data
            )
            return IssuedKey(str(key.id), tenant, key.role, full, created)
    finally:
        await engine.dispose()


async def verify_audit(settings: Settings) -> VerifyResult:
    """Verify the whole audit chain; returns ``core.governance.audit_verify.VerifyResult``."""
    from core.db.engine import make_engine, make_sessionmaker
    from core.governance.audit_verify import verify_chain

    engine = make_engine(settings.database)
    try:
        async with make_sessionmaker(engine)() as session:
            return await verify_chain(session)
    finally:
        await engine.dispose()
