"""API keys: create (secret shown once), list, get, revoke. Revocation is effective at once."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from fastapi import APIRouter, status
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select

from api.deps import PrincipalDep, SessionDep, StateDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.schemas import Page, StrictModel
from core.db.models import ApiKey
from core.errors import BadRequest, Forbidden
from core.governance import audit
from core.identity import ROLE_PERMISSIONS, Permission, Principal, Role, check_can_mint
from core.keys_service import evict_after_commit, find_key, issue_key

router = APIRouter(tags=["keys"])

SCOPE = r"^[a-z_]+:[A-Za-z0-9._/\-]+\*?$|^[a-z_]+:\*$"


class KeyCreate(StrictModel):
    name: str = Field("", max_length=200)
    role: Role
    scopes: list[str] | None = Field(
        None,
        max_length=100,
        description="Restrict the key, e.g. `models:sim-openai/*`. Omit for no restriction.",
    )
    expires_at: dt.datetime | None = None
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    tenant_id: str | None = Field(None, description="Platform keys only: mint for another tenant.")
    user_id: uuid.UUID | None = None
    rate_limit_per_minute: int | None = Field(None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyCreate:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise ValueError("give expires_at or expires_in_days, not both")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at must include a timezone")
        for scope in self.scopes or []:
            if not re.match(SCOPE, scope):
                raise ValueError(f"malformed scope {scope!r} (expected kind:value, e.g. models:gpt-4o)")
        return self


class KeyOut(BaseModel):
    id: uuid.UUID
    tenant_id: str
    name: str
    prefix: str
    role: Role
    scopes: list[str] | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_by: str
    created_at: dt.datetime
    rate_limit_per_minute: int | None

    @classmethod
    def of(cls, k: ApiKey) -> KeyOut:
        return cls(
            id=k.id,
            tenant_id=k.tenant_id,
            name=k.name,
            prefix=k.prefix,
            role=Role(k.role),
            scopes=k.scopes,
            expires_at=k.expires_at,
            revoked_at=k.revoked_at,
            created_by=k.created_by,
            created_at=k.created_at,
            rate_limit_per_minute=k.rate_limit_per_minute,
        )


class KeyCreated(KeyOut):
    key: str = Field(description="The full API key. Shown once; store it now.")


@router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
async def create_key(
    body: KeyCreate, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> KeyCreated:
    tenant_id = body.tenant_id or principal.tenant_id
    expires_at = body.expires_at
    if body.expires_in_days is not None:
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=body.expires_in_days)
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC):
        raise BadRequest("expires_at is in the past")
    check_can_mint(principal, tenant_id=tenant_id, role=body.role, scopes=body.scopes, expires_at=expires_at)
    pepper = state.settings.security.key_pepper
    assert pepper is not None
    key, full = await issue_key(
        session,
        tenant_id=tenant_id,
        role=body.role,
        name=body.name,
        scopes=body.scopes,
        expires_at=expires_at,
        created_by=principal.actor,
        pepper=pepper.get_secret_value(),
        user_id=body.user_id,
        rate_limit_per_minute=body.rate_limit_per_minute,
    )
    await audit.append(
        session,
        actor=principal.actor,
        action="key.create",
        tenant_id=tenant_id,
        target=f"key:{key.id}",
        data={"role": key.role, "scopes": key.scopes, "name": key.name, "prefix": key.prefix},
    )
    await session.refresh(key)
    return KeyCreated(**KeyOut.of(key).model_dump(), key=full)


@router.get("/keys", response_model=Page[KeyOut])
async def list_keys(
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    include_revoked: bool = False,
) -> Page[KeyOut]:
    principal.require(Permission.keys_read)
    query = (
        select(ApiKey)
        .where(ApiKey.tenant_id == principal.tenant_id)
        .order_by(ApiKey.created_at, ApiKey.id)
        .limit(limit + 1)
    )
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    after = decode_cursor(cursor)
    if after:
        created, key_id = dt.datetime.fromisoformat(str(after[0])), uuid.UUID(str(after[1]))
        query = query.where((ApiKey.created_at, ApiKey.id) > (created, key_id))  # type: ignore[operator]
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor([rows[-1].created_at.isoformat(), str(rows[-1].id)]) if more else None
    return Page(data=[KeyOut.of(k) for k in rows], next_cursor=next_cursor)


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> KeyOut:
    principal.require(Permission.keys_read)
    return KeyOut.of(await find_key(session, principal.tenant_id, key_id))


def _check_revoke(principal: Principal, key: ApiKey) -> None:
    if key.id == principal.key_id:
        return  # a key may always revoke itself
    principal.require(Permission.keys_write)
    if not ROLE_PERMISSIONS[Role(key.role)] <= ROLE_PERMISSIONS[principal.role]:
        raise Forbidden("cannot revoke a key with more rights than your own")


@router.post("/keys/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> KeyOut:
    key = await find_key(session, principal.tenant_id, key_id)
    _check_revoke(principal, key)
    if key.revoked_at is None:
        key.revoked_at = dt.datetime.now(dt.UTC)
        await audit.append(
            session,
            actor=principal.actor,
            action="key.revoke",
            tenant_id=key.tenant_id,
            target=f"key:{key.id}",
            data={"prefix": key.prefix},
        )
    evict_after_commit(session, key.prefix)
    return KeyOut.of(key)


@router.delete("/keys/{key_id}", response_model=KeyOut, summary="Revoke a key (same as POST …/revoke)")
async def delete_key(key_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> KeyOut:
    return await revoke_key(key_id, session, principal)
