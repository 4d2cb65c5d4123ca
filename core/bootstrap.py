"""First-start bootstrap: the platform tenant and its first owner key (shown once)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.db.models import ApiKey
from core.governance import audit
from core.identity import Role
from core.keys_service import create_tenant, get_tenant, issue_key

PLATFORM_TENANT = "default"


async def bootstrap_admin(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> str | None:
    """Create the platform tenant and an owner key on first start; ``None`` if already done."""
    assert settings.security.key_pepper is not None
    async with sessions() as session, session.begin():
        tenant = await get_tenant(session, PLATFORM_TENANT)
        if tenant is not None:
            has_key = await session.scalar(
                select(ApiKey.id).where(ApiKey.tenant_id == PLATFORM_TENANT).limit(1)
            )
            if has_key is not None:
                return None
        else:
            await create_tenant(session, tenant_id=PLATFORM_TENANT, name="Default", is_platform=True)
            await audit.append(
                session,
                actor="system:bootstrap",
                action="tenant.create",
                tenant_id=PLATFORM_TENANT,
                target=f"tenant:{PLATFORM_TENANT}",
            )
        key, full = await issue_key(
            session,
            tenant_id=PLATFORM_TENANT,
            role=Role.owner,
            name="bootstrap admin",
            scopes=None,
            expires_at=None,
            created_by="system:bootstrap",
            pepper=settings.security.key_pepper.get_secret_value(),
        )
        await audit.append(
            session,
            actor="system:bootstrap",
            action="key.create",
            tenant_id=PLATFORM_TENANT,
            target=f"key:{key.id}",
            data={"role": key.role, "name": key.name},
        )
        return full
