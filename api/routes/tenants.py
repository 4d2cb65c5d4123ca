"""Tenants. Only keys of the platform tenant (owner/admin) manage other tenants."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.deps import PrincipalDep, SessionDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.schemas import Page, StrictModel
from core.db.models import ApiKey, Tenant
from core.errors import NotFound
from core.governance import audit
from core.identity import Permission, Principal
from core.keys_service import create_tenant, evict_after_commit

router = APIRouter(tags=["tenants"])

TENANT_ID = r"^[a-z0-9][a-z0-9-]{1,62}$"


class TenantCreate(StrictModel):
    id: str = Field(pattern=TENANT_ID, description="Stable slug, e.g. `acme`.")
    name: str = Field(min_length=1, max_length=200)


class TenantUpdate(StrictModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    disabled: bool | None = None


class TenantOut(BaseModel):
    id: str
    name: str
    is_platform: bool
    created_at: dt.datetime
    disabled_at: dt.datetime | None

    @classmethod
    def of(cls, t: Tenant) -> TenantOut:
        return cls(
            id=t.id,
            name=t.name,
            is_platform=t.is_platform,
            created_at=t.created_at,
            disabled_at=t.disabled_at,
        )


async def _visible(session: SessionDep, principal: Principal, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None or (tenant.id != principal.tenant_id and not principal.can(Permission.tenants_manage)):
        raise NotFound("tenant not found")
    return tenant


@router.post("/tenants", status_code=status.HTTP_201_CREATED, response_model=TenantOut)
async def create(body: TenantCreate, session: SessionDep, principal: PrincipalDep) -> TenantOut:
    principal.require(Permission.tenants_manage)
    tenant = await create_tenant(session, tenant_id=body.id, name=body.name)
    await audit.append(
        session,
        actor=principal.actor,
        action="tenant.create",
        tenant_id=tenant.id,
        target=f"tenant:{tenant.id}",
    )
    return TenantOut.of(tenant)


@router.get("/tenants", response_model=Page[TenantOut])
async def list_tenants(
    session: SessionDep, principal: PrincipalDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[TenantOut]:
    query = select(Tenant).order_by(Tenant.id).limit(limit + 1)
    if not principal.can(Permission.tenants_manage):
        query = query.where(Tenant.id == principal.tenant_id)
    after = decode_cursor(cursor)
    if after:
        query = query.where(Tenant.id > str(after[0]))
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        data=[TenantOut.of(t) for t in rows], next_cursor=encode_cursor([rows[-1].id]) if more else None
    )


@router.get("/tenants/{tenant_id}", response_model=TenantOut)
async def get_tenant(tenant_id: str, session: SessionDep, principal: PrincipalDep) -> TenantOut:
    return TenantOut.of(await _visible(session, principal, tenant_id))


@router.patch("/tenants/{tenant_id}", response_model=TenantOut)
async def update_tenant(
    tenant_id: str, body: TenantUpdate, session: SessionDep, principal: PrincipalDep
) -> TenantOut:
    tenant = await _visible(session, principal, tenant_id)
    principal.require(Permission.tenants_manage)
    changes: dict[str, object] = {}
    if body.name is not None:
        tenant.name = changes["name"] = body.name
    if body.disabled is not None:
        tenant.disabled_at = dt.datetime.now(dt.UTC) if body.disabled else None
        changes["disabled"] = body.disabled
    await audit.append(
        session,
        actor=principal.actor,
        action="tenant.update",
        tenant_id=tenant.id,
        target=f"tenant:{tenant.id}",
        data=changes,
    )
    await session.flush()
    if body.disabled is not None:
        prefixes = (
            await session.execute(select(ApiKey.prefix).where(ApiKey.tenant_id == tenant.id))
        ).scalars()
        for prefix in prefixes:
            evict_after_commit(session, prefix)
    return TenantOut.of(tenant)
