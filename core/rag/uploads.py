"""Binary uploads in the claim-check payload table (PDF and DOCX are not UTF-8 text).

Same table, tenancy and idempotency rules as :class:`core.payloads.PayloadStore`, for bytes.
"""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Payload
from core.errors import NotFound
from core.orchestration.contracts import PayloadRef


async def put_bytes(
    session: AsyncSession, tenant_id: str, data: bytes, content_type: str, idempotency_key: str
) -> PayloadRef:
    """Store ``data``; the same ``idempotency_key`` returns the first write's reference."""
    digest = hashlib.sha256(data).hexdigest()
    stmt = (
        insert(Payload)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            idempotency_key=idempotency_key,
            content_type=content_type,
            sha256=digest,
            size=len(data),
            data=data,
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
    )
    await session.execute(stmt)
    row = (
        await session.execute(
            select(Payload.id, Payload.sha256, Payload.size).where(
                Payload.tenant_id == tenant_id, Payload.idempotency_key == idempotency_key
            )
        )
    ).one()
    return PayloadRef(
        id=str(row.id), sha256=row.sha256, size=row.size, preview=f"{content_type}, {row.size} bytes"
    )


async def get_bytes(session: AsyncSession, tenant_id: str, ref: PayloadRef) -> bytes:
    """The bytes behind ``ref``; :class:`NotFound` for another tenant's or a tampered reference."""
    try:
        payload_id = uuid.UUID(ref.id)
    except ValueError:
        raise NotFound("payload not found") from None
    row = (
        await session.execute(
            select(Payload.data, Payload.sha256).where(
                Payload.tenant_id == tenant_id, Payload.id == payload_id
            )
        )
    ).one_or_none()
    if row is None or row.sha256 != ref.sha256:
        raise NotFound("payload not found")
    return bytes(row.data)
