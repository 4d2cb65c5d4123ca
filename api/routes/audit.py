"""The audit trail over HTTP: list events, verify the chain, export and check signed heads.

Listing is tenant-scoped (a platform key may look across tenants). The chain itself is one
log shared by all tenants, so ``verify`` and ``head`` always cover the whole chain: they
reveal hashes and sequence numbers, never other tenants' event contents.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel
from sqlalchemy import select

from api.deps import PrincipalDep, SessionDep, StateDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.schemas import Page
from core.config import Settings
from core.db.models import AuditEvent
from core.errors import BadRequest, NotFound, Unavailable
from core.governance.audit_head import SignedHead, export_head, load_signing_key, verify_against_head
from core.governance.audit_verify import VerifyResult, verify_chain
from core.identity import Permission, Principal

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditEventOut(BaseModel):
    seq: int
    tenant_id: str | None
    actor: str
    action: str
    target: str
    data: dict[str, Any]
    created_at: dt.datetime
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            seq=event.seq,
            tenant_id=event.tenant_id,
            actor=event.actor,
            action=event.action,
            target=event.target,
            data=event.data,
            created_at=event.created_at,
            prev_hash=event.prev_hash,
            hash=event.hash,
        )


def _tenant_scope(principal: Principal, requested: str | None) -> str | None:
    """The tenant to filter on; None means every tenant (platform keys only)."""
    if principal.is_platform:
        return requested
    if requested is not None and requested != principal.tenant_id:
        raise NotFound("tenant not found")  # another tenant answers 404, never 403
    return principal.tenant_id


def _cursor_seq(cursor: str | None) -> int | None:
    values = decode_cursor(cursor)
    if values is None:
        return None
    if len(values) != 1 or not isinstance(values[0], int) or isinstance(values[0], bool):
        raise BadRequest("invalid cursor")
    return values[0]


def _signing_seed(settings: Settings) -> str:
    key = settings.security.audit_signing_key
    if key is None:
        raise Unavailable("the audit signing key is not configured")
    return key.get_secret_value()


@router.get("/events", response_model=Page[AuditEventOut], summary="List audit events (oldest first)")
async def list_events(
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    tenant_id: Annotated[
        str | None, Query(max_length=64, description="Platform keys: one tenant (default: all).")
    ] = None,
    action: Annotated[
        str | None, Query(max_length=100, description="Exact action, or a prefix ending in `*` (`key.*`).")
    ] = None,
    actor: Annotated[str | None, Query(max_length=200, description="Exact actor (`key:<id>`).")] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Only events at or after this time (ISO 8601 with zone).")
    ] = None,
) -> Page[AuditEventOut]:
    principal.require(Permission.audit_read)
    query = select(AuditEvent).order_by(AuditEvent.seq).limit(limit + 1)
    scope = _tenant_scope(principal, tenant_id)
    if scope is not None:
        query = query.where(AuditEvent.tenant_id == scope)
    if action is not None:
        if action.endswith("*"):
            query = query.where(AuditEvent.action.startswith(action[:-1], autoescape=True))
        else:
            query = query.where(AuditEvent.action == action)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    after = _cursor_seq(cursor)
    if after is not None:
        query = query.where(AuditEvent.seq > after)
    rows = list((await session.scalars(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor([rows[-1].seq]) if more else None
    return Page(data=[AuditEventOut.of(e) for e in rows], next_cursor=next_cursor)


@router.get("/verify", response_model=VerifyResult, summary="Verify the hash chain")
async def verify(
    session: SessionDep,
    principal: PrincipalDep,
    from_seq: Annotated[int, Query(ge=1, description="First seq to verify.")] = 1,
    to_seq: Annotated[int | None, Query(ge=1, description="Last seq to verify (default: the end).")] = None,
) -> VerifyResult:
    """Recompute every hash and link. A broken chain is still a 200: ``ok`` is false and
    ``first_broken_seq`` / ``reason`` name the first broken link."""
    principal.require(Permission.audit_read)
    return await verify_chain(session, from_seq=from_seq, to_seq=to_seq)


@router.get("/head", response_model=SignedHead, summary="Export the signed chain head")
async def head(session: SessionDep, principal: PrincipalDep, state: StateDep) -> SignedHead:
    """The last event's seq and hash, signed with the server's Ed25519 audit key. Store it
    outside this deployment and check it later with ``POST /v1/audit/head/verify``."""
    principal.require(Permission.audit_read)
    try:
        return await export_head(session, _signing_seed(state.settings))
    except ValueError as exc:  # malformed seed: say so without echoing it
        raise Unavailable("the audit signing key is misconfigured") from exc


@router.post("/head/verify", response_model=VerifyResult, summary="Check the chain against an exported head")
async def verify_head(
    body: SignedHead, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> VerifyResult:
    """Valid only if the head was signed by this server's key, the chain verifies, and the
    chain still holds the head's seq with the same hash (a deleted tail is named)."""
    principal.require(Permission.audit_read)
    try:
        trusted = load_signing_key(_signing_seed(state.settings)).public_key()
    except ValueError as exc:
        raise Unavailable("the audit signing key is misconfigured") from exc
    return await verify_against_head(session, body, trusted)
