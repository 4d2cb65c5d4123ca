"""The claim-check payload store: large texts in Postgres, workflows pass :class:`PayloadRef`s.

Every read and write is tenant-scoped: a reference is only honoured for the tenant that
stored it, so a forged or leaked id of another tenant's payload is simply :class:`NotFound`.
Writes with an ``idempotency_key`` are deduplicated per tenant (``UNIQUE(tenant_id,
idempotency_key)``): an activity retry gets the reference of the first write back.
"""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Payload
from core.errors import NotFound, PayloadTooLarge
from core.orchestration.contracts import PREVIEW_CHARS, PayloadRef

DEFAULT_MAX_BYTES = 4 * 1024 * 1024


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The first ``limit`` characters of ``text`` on one line (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def ref_of(row: Payload, text: str) -> PayloadRef:
    """The claim-check of a stored row."""
    return PayloadRef(id=str(row.id), sha256=row.sha256, size=row.size, preview=preview(text))


class PayloadStore:
    """Tenant-scoped text payloads; the caller owns the transaction (functions only flush)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes

    async def put(
        self,
        session: AsyncSession,
        tenant_id: str,
        text: str,
        idempotency_key: str | None = None,
        content_type: str = "text/plain",
    ) -> PayloadRef:
        """Store ``text`` and return its reference; the same idempotency key returns the first write.

        Raises :class:`PayloadTooLarge` above ``max_bytes`` (UTF-8).
        """
        data = text.encode("utf-8")
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"payload of {len(data)} bytes exceeds the limit of {self.max_bytes} bytes")
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
            .returning(Payload.id)
        )
        new_id = (await session.execute(stmt)).scalar_one_or_none()
        if new_id is not None:
            return PayloadRef(id=str(new_id), sha256=digest, size=len(data), preview=preview(text))
        existing = (
            await session.execute(
                select(Payload).where(
                    Payload.tenant_id == tenant_id, Payload.idempotency_key == idempotency_key
                )
            )
        ).scalar_one()
        return ref_of(existing, existing.data.decode("utf-8"))

    async def get(self, session: AsyncSession, tenant_id: str, ref: PayloadRef | str) -> str:
        """The text behind ``ref`` (a reference or its id); :class:`NotFound` for another tenant's."""
        raw_id = ref.id if isinstance(ref, PayloadRef) else ref
        try:
            payload_id = uuid.UUID(raw_id)
        except ValueError:
            raise NotFound("payload not found") from None
        row = (
            await session.execute(
                select(Payload).where(Payload.tenant_id == tenant_id, Payload.id == payload_id)
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("payload not found")
        if isinstance(ref, PayloadRef) and ref.sha256 != row.sha256:
            raise NotFound("payload not found")
        return row.data.decode("utf-8")

    async def ref(self, session: AsyncSession, tenant_id: str, payload_id: uuid.UUID | str) -> PayloadRef:
        """The reference of a stored payload (tenant-scoped)."""
        row = (
            await session.execute(
                select(Payload).where(
                    Payload.tenant_id == tenant_id, Payload.id == uuid.UUID(str(payload_id))
                )
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("payload not found")
        return ref_of(row, row.data.decode("utf-8"))

    async def get_many(self, session: AsyncSession, tenant_id: str, refs: list[PayloadRef]) -> list[str]:
        """The texts behind ``refs``, in order (one query)."""
        ids = []
        for ref in refs:
            try:
                ids.append(uuid.UUID(ref.id))
            except ValueError:
                raise NotFound("payload not found") from None
        rows = (
            await session.execute(select(Payload).where(Payload.tenant_id == tenant_id, Payload.id.in_(ids)))
        ).scalars()
        by_id = {str(r.id): r for r in rows}
        out: list[str] = []
        for ref in refs:
            row = by_id.get(ref.id)
            if row is None or row.sha256 != ref.sha256:
                raise NotFound("payload not found")
            out.append(row.data.decode("utf-8"))
        return out
