"""``/v1/connections``: a tenant's configured connectors.

Credentials are write-only: accepted on create/update, encrypted at rest, never returned,
logged, audited or put in workflow payloads (responses list the credential field *names*).
Every host of a connection's config passes the outbound guard on create, update and test:
private, loopback and link-local targets are refused unless the operator allows them
(``NEXUS_CONNECTORS__ALLOW_PRIVATE_HOSTS`` / ``NEXUS_CONNECTORS__ALLOWED_HOSTS``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, SessionDep, StateDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.routes.connector_jobs import RecordPage, records_page
from api.schemas import StrictModel
from connectors import registry
from connectors.base import ConnectorError
from connectors.jobs import JobRepository
from connectors.store import (
    ConnectionRepository,
    CredentialCipher,
    check_hosts,
    probe_connection,
    validate_models,
)
from core.db.connector_models import Connection
from core.identity import Permission

router = APIRouter(tags=["connections"])


class ConnectionCreate(StrictModel):
    name: str = Field(min_length=1, max_length=100, description="Unique per tenant: [a-z0-9][a-z0-9_.-]*.")
    type: str = Field(description="A connector type from GET /v1/connectors.")
    config: dict[str, Any] = Field(default_factory=dict)
    credentials: dict[str, Any] = Field(default_factory=dict, description="Write-only.")


class ConnectionUpdate(StrictModel):
    config: dict[str, Any] | None = None
    credentials: dict[str, Any] | None = Field(None, description="Write-only; replaces all credentials.")


class ConnectionOut(BaseModel):
    id: str
    name: str
    type: str
    config: dict[str, Any]
    credential_fields: list[str]
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: Connection) -> ConnectionOut:
        try:
            fields = list(registry.get(row.type).credentials_model.model_fields)
        except ConnectorError:
            fields = []
        return cls(
            id=row.id,
            name=row.name,
            type=row.type,
            config=row.config,
            credential_fields=fields,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class ConnectionPage(BaseModel):
    data: list[ConnectionOut]
    next_cursor: str | None


class TestResult(BaseModel):
    ok: bool
    kind: str | None = None
    message: str | None = None
    latency_ms: float


def _repo(session: Any, state: Any) -> ConnectionRepository:
    return ConnectionRepository(session, CredentialCipher.from_settings(state.settings))


@router.post("/connections", response_model=ConnectionOut, status_code=201)
async def create_connection(
    body: ConnectionCreate, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> ConnectionOut:
    """Create a connection (config and credentials validated, hosts checked, credentials sealed)."""
    principal.require(Permission.connections_manage)
    cls = validate_models(body.type, body.config, body.credentials)
    await check_hosts(cls, body.config, state.settings.connectors)
    row = await _repo(session, state).create(
        tenant_id=principal.tenant_id,
        name=body.name,
        type_=body.type,
        config=body.config,
        credentials=body.credentials,
        actor=principal.actor,
    )
    await session.refresh(row)
    return ConnectionOut.of(row)


@router.get("/connections", response_model=ConnectionPage)
async def list_connections(
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ConnectionPage:
    """The tenant's connections, newest first (never their credentials)."""
    principal.require(Permission.runs_read)
    after = decode_cursor(cursor)
    key = (str(after[0]), str(after[1])) if after and len(after) == 2 else None
    rows = await _repo(session, state).page(principal.tenant_id, limit=limit + 1, after=key)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id])
    return ConnectionPage(data=[ConnectionOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/connections/{connection_id}", response_model=ConnectionOut)
async def get_connection(
    connection_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> ConnectionOut:
    """One connection, by id or name."""
    principal.require(Permission.runs_read)
    return ConnectionOut.of(await _repo(session, state).get(principal.tenant_id, connection_id))


@router.patch("/connections/{connection_id}", response_model=ConnectionOut)
async def update_connection(
    connection_id: str, body: ConnectionUpdate, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> ConnectionOut:
    """Replace the config and/or the credentials (hosts are checked again)."""
    principal.require(Permission.connections_manage)
    repo = _repo(session, state)
    row = await repo.get(principal.tenant_id, connection_id)
    cls = validate_models(row.type, body.config if body.config is not None else row.config, body.credentials)
    if body.config is not None:
        await check_hosts(cls, body.config, state.settings.connectors)
    row = await repo.update(
        principal.tenant_id, row.id, actor=principal.actor, config=body.config, credentials=body.credentials
    )
    await session.refresh(row)
    return ConnectionOut.of(row)


@router.delete("/connections/{connection_id}", status_code=204)
async def delete_connection(
    connection_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> Response:
    """Delete a connection that no connector job uses."""
    principal.require(Permission.connections_manage)
    await _repo(session, state).delete(principal.tenant_id, connection_id, actor=principal.actor)
    return Response(status_code=204)


@router.post("/connections/{connection_id}/test", response_model=TestResult)
async def test_connection(
    connection_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> TestResult:
    """Check the hosts, then make one authenticated call; a vendor refusal is ``ok: false``."""
    principal.require(Permission.runs_write)
    repo = _repo(session, state)
    row = await repo.get(principal.tenant_id, connection_id)
    cls = validate_models(row.type, row.config, None)
    await check_hosts(cls, row.config, state.settings.connectors)
    credentials = repo.credentials(row)
    started = time.perf_counter()
    try:
        await probe_connection(row, credentials, state.settings.connectors)
    except ConnectorError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return TestResult(ok=False, kind=exc.kind.value, message=exc.message, latency_ms=round(elapsed, 1))
    return TestResult(ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 1))


@router.get("/connections/{connection_id}/records", response_model=RecordPage)
async def list_connection_records(
    connection_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    object: str = Query(min_length=1, max_length=100, description="The synced object, e.g. 'incident'."),
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> RecordPage:
    """Records synced from this connection's ``object`` into the records table, oldest first."""
    principal.require(Permission.runs_read)
    row = await _repo(session, state).get(principal.tenant_id, connection_id)
    return await records_page(
        JobRepository(session), principal.tenant_id, row.id, object, limit, decode_cursor(cursor)
    )
