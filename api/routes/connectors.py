"""``/v1/connectors``: the connector types this deployment offers (registry description)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import PrincipalDep
from connectors import registry
from core.errors import NotFound
from core.identity import Permission

router = APIRouter(tags=["connectors"])


@router.get("/connectors")
async def list_connectors(principal: PrincipalDep) -> dict[str, Any]:
    """Every connector type: config schema, credential field names (never values), actions with
    their idempotency and compensation contract, sync objects and conformance results."""
    principal.require(Permission.runs_read)
    return {"data": registry.describe()}


@router.get("/connectors/{type_}")
async def get_connector(type_: str, principal: PrincipalDep) -> dict[str, Any]:
    """One connector type's description."""
    principal.require(Permission.runs_read)
    for entry in registry.describe():
        if entry["type"] == type_:
            return entry
    raise NotFound("connector type not found")
