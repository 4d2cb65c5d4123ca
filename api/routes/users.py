"""Users of a tenant. Roles granted can never exceed the caller's own."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi import APIRouter, status
from pydantic import BaseModel, EmailStr, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.deps import PrincipalDep, SessionDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.schemas import Page, StrictModel
from core.db.models import User
from core.errors import Conflict, Forbidden, NotFound
from core.governance import audit
from core.identity import ROLE_PERMISSIONS, Permission, Principal, Role

router = APIRouter(tags=["users"])


class UserCreate(StrictModel):
    email: EmailStr
    name: str = Field("", max_length=200)
    role: Role


class UserUpdate(StrictModel):
    name: str | None = Field(None, max_length=200)
    role: Role | None = None
    disabled: bool | None = None


class UserOut(BaseModel):
    id: uuid.UUID
    tenant_id: str
    email: str
    name: str
    role: Role
    created_at: dt.datetime
    disabled_at: dt.datetime | None

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls(
            id=u.id,
            tenant_id=u.tenant_id,
            email=u.email,
            name=u.name,
            role=Role(u.role),
            created_at=u.created_at,
            disabled_at=u.disabled_at,
        )


def _check_grant(principal: Principal, role: Role) -> None:
    if not ROLE_PERMISSIONS[role] <= ROLE_PERMISSIONS[principal.role] or (
        role is Role.owner and principal.role is not Role.owner
    ):
        raise Forbidden(f"cannot grant role {role.value!r} beyond your own")


async def _get(session: SessionDep, principal: Principal, user_id: uuid.UUID) -> User:
    user = (
        await session.execute(select(User).where(User.id == user_id, User.tenant_id == principal.tenant_id))
    ).scalar_one_or_none()
    if user is None:
        raise NotFound("user not found")
    return user


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def create_user(body: UserCreate, session: SessionDep, principal: PrincipalDep) -> UserOut:
    principal.require(Permission.users_write)
    _check_grant(principal, body.role)
    user = User(tenant_id=principal.tenant_id, email=body.email.lower(), name=body.name, role=body.role.value)
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict("a user with this email already exists in the tenant") from exc
    await audit.append(
        session,
        actor=principal.actor,
        action="user.create",
        tenant_id=principal.tenant_id,
        target=f"user:{user.id}",
        data={"role": user.role},
    )
    await session.refresh(user)
    return UserOut.of(user)


@router.get("/users", response_model=Page[UserOut])
async def list_users(
    session: SessionDep, principal: PrincipalDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[UserOut]:
    principal.require(Permission.users_read)
    query = select(User).where(User.tenant_id == principal.tenant_id).order_by(User.email).limit(limit + 1)
    after = decode_cursor(cursor)
    if after:
        query = query.where(User.email > str(after[0]))
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        data=[UserOut.of(u) for u in rows], next_cursor=encode_cursor([rows[-1].email]) if more else None
    )


@router.get("/users/{user_id}", response_model=UserOut)
async def get_user(user_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> UserOut:
    principal.require(Permission.users_read)
    return UserOut.of(await _get(session, principal, user_id))


@router.patch("/users/{user_id}", response_model=UserOut)
async def update_user(
    user_id: uuid.UUID, body: UserUpdate, session: SessionDep, principal: PrincipalDep
) -> UserOut:
    principal.require(Permission.users_write)
    user = await _get(session, principal, user_id)
    _check_grant(principal, Role(user.role))
    changes: dict[str, object] = {}
    if body.role is not None:
        _check_grant(principal, body.role)
        user.role = changes["role"] = body.role.value
    if body.name is not None:
        user.name = changes["name"] = body.name
    if body.disabled is not None:
        user.disabled_at = dt.datetime.now(dt.UTC) if body.disabled else None
        changes["disabled"] = body.disabled
    await audit.append(
        session,
        actor=principal.actor,
        action="user.update",
        tenant_id=principal.tenant_id,
        target=f"user:{user.id}",
        data=changes,
    )
    return UserOut.of(user)
