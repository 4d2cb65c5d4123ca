"""Operating the gateway: inference logs (+ live tail), monthly budgets, tenant gateway settings."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import PrincipalDep, RedisDep, SessionDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.schemas import StrictModel
from core.db.gateway_models import Budget
from core.db.models import ApiKey, Tenant
from core.errors import BadRequest, NotFound
from core.gateway import logs as inference_logs
from core.gateway.budget_store import set_budget
from core.gateway.budgets import BudgetScope, budget_status, month_key
from core.governance import audit
from core.identity import Permission, Principal
from core.keys_service import TENANT_LIMIT_FIELDS, evict_after_commit

router = APIRouter(tags=["gateway admin"])


# --- inference logs ------------------------------------------------------------------------


@router.get("/inference-logs", summary="Gateway calls of the caller's tenant, newest first")
async def list_inference_logs(
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    status: Literal["ok", "error"] | None = None,
    key_id: uuid.UUID | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    include_content: bool = False,
) -> dict[str, Any]:
    principal.require(Permission.runs_read)
    for moment in (since, until):
        if moment is not None and moment.tzinfo is None:
            raise BadRequest("since/until must include a timezone")
    page = await inference_logs.list_logs(
        session,
        principal.tenant_id,
        inference_logs.LogFilters(model=model, status=status, key_id=key_id, since=since, until=until),
        limit=limit,
        cursor=decode_cursor(cursor),
        # Prompts and answers are only shown to roles that may read the tenant's data in full.
        include_content=include_content and principal.can(Permission.users_read),
    )
    return {"data": page.data, "next_cursor": encode_cursor(page.next_cursor) if page.next_cursor else None}


@router.get("/inference-logs/tail", summary="Live tail of the tenant's gateway calls (Server-Sent Events)")
async def tail_inference_logs(
    request: Request, redis: RedisDep, principal: PrincipalDep
) -> EventSourceResponse:
    principal.require(Permission.runs_read)

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for record in inference_logs.tail(redis, principal.tenant_id):
            if await request.is_disconnected():
                return
            if record is None:
                yield ServerSentEvent(comment="keep-alive")
            else:
                yield ServerSentEvent(data=orjson.dumps(record).decode(), event="inference")

    return EventSourceResponse(events(), ping=15)


# --- budgets --------------------------------------------------------------------------------


class BudgetSet(StrictModel):
    scope: Literal["tenant", "key"]
    key_id: uuid.UUID | None = Field(None, description="Required when scope is 'key'.")
    monthly_limit_usd: Decimal | None = Field(
        ...,
        ge=0,
        max_digits=14,
        decimal_places=6,
        description="USD per calendar month (UTC); null removes it.",
    )


class BudgetOut(BaseModel):
    scope: Literal["tenant", "key"]
    key_id: uuid.UUID | None
    month: str
    monthly_limit_usd: Decimal | None
    spent_usd: Decimal
    reserved_usd: Decimal


def _scope(principal: Principal, scope: str, key_id: uuid.UUID | None) -> BudgetScope:
    if scope == "tenant":
        if key_id is not None:
            raise BadRequest("key_id is only for scope 'key'")
        return BudgetScope.for_tenant(principal.tenant_id)
    if key_id is None:
        raise BadRequest("scope 'key' needs key_id")
    return BudgetScope.for_key(principal.tenant_id, key_id)


async def _out(redis: RedisDep, scope: BudgetScope, key_id: uuid.UUID | None, kind: str) -> BudgetOut:
    month = month_key()
    status = await budget_status(redis, scope, month)
    return BudgetOut(
        scope="key" if kind == "key" else "tenant",
        key_id=key_id,
        month=month,
        monthly_limit_usd=status.limit_usd,
        spent_usd=status.spent_usd,
        reserved_usd=status.reserved_usd,
    )


@router.put("/budgets", response_model=BudgetOut, summary="Set or remove a monthly budget")
async def put_budget(
    body: BudgetSet, session: SessionDep, redis: RedisDep, principal: PrincipalDep
) -> BudgetOut:
    principal.require(Permission.tenant_settings)
    scope = _scope(principal, body.scope, body.key_id)
    await set_budget(session, redis, scope, body.monthly_limit_usd)
    await audit.append(
        session,
        actor=principal.actor,
        action="budget.set",
        tenant_id=principal.tenant_id,
        target=f"budget:{body.scope}:{body.key_id or principal.tenant_id}",
        data={
            "monthly_limit_usd": str(body.monthly_limit_usd) if body.monthly_limit_usd is not None else None
        },
    )
    return await _out(redis, scope, body.key_id, body.scope)


@router.get("/budgets", summary="Budgets of the tenant and its keys, with this month's spend")
async def list_budgets(session: SessionDep, redis: RedisDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require(Permission.runs_read)
    rows = (await session.execute(select(Budget).where(Budget.tenant_id == principal.tenant_id))).scalars()
    out = [await _out(redis, BudgetScope.for_tenant(principal.tenant_id), None, "tenant")]
    for row in rows:
        if row.scope_type == "key":
            key_id = uuid.UUID(row.scope_id)
            out.append(await _out(redis, BudgetScope.for_key(principal.tenant_id, key_id), key_id, "key"))
    return {"data": [b.model_dump(mode="json") for b in out]}


# --- tenant gateway settings ----------------------------------------------------------------


class GatewaySettings(StrictModel):
    log_content: bool | None = Field(None, description="Store prompts and answers in inference logs.")
    tenant_rpm: int | None = Field(None, ge=1, description="Requests per minute for the whole tenant.")
    tenant_tpm: int | None = Field(None, ge=1, description="Tokens per minute for the whole tenant.")
    key_tpm: int | None = Field(None, ge=1, description="Tokens per minute for each key of the tenant.")


@router.get("/gateway/settings", response_model=GatewaySettings, summary="The tenant's gateway settings")
async def get_gateway_settings(session: SessionDep, principal: PrincipalDep) -> GatewaySettings:
    tenant = await session.get(Tenant, principal.tenant_id)
    if tenant is None:
        raise NotFound("tenant not found")
    return GatewaySettings(**{k: v for k, v in (tenant.settings or {}).items() if k in TENANT_LIMIT_FIELDS})


@router.put(
    "/gateway/settings", response_model=GatewaySettings, summary="Replace the tenant's gateway settings"
)
async def put_gateway_settings(
    body: GatewaySettings, session: SessionDep, principal: PrincipalDep
) -> GatewaySettings:
    principal.require(Permission.tenant_settings)
    tenant = await session.get(Tenant, principal.tenant_id, with_for_update=True)
    if tenant is None:
        raise NotFound("tenant not found")
    settings = {k: v for k, v in (tenant.settings or {}).items() if k not in TENANT_LIMIT_FIELDS}
    settings.update(body.model_dump(exclude_none=True))
    tenant.settings = settings
    await audit.append(
        session,
        actor=principal.actor,
        action="tenant.gateway_settings",
        tenant_id=tenant.id,
        target=f"tenant:{tenant.id}",
        data=body.model_dump(exclude_none=True),
    )
    # The limits travel with each cached key record: drop them so they apply at once.
    for prefix in (
        await session.execute(select(ApiKey.prefix).where(ApiKey.tenant_id == tenant.id))
    ).scalars():
        evict_after_commit(session, prefix)
    return body
