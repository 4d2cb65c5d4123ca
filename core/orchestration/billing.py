"""``model_calls``: the once-only billing record of a workflow's model calls.

A row is written in the same transaction as the answer's payload, under the workflow's
``call_key``; finding the row means the call finished and was paid for, so it is never made
again (see :class:`activities.llm.LlmActivities`).
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.orchestration_models import ModelCall


class ModelCallRepository:
    """Tenant-scoped access to ``model_calls``; the caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> ModelCallRepository:
        return cls(session)

    async def find(self, tenant_id: str, call_key: str) -> ModelCall | None:
        """The finished call stored under ``call_key`` (only the tenant's own)."""
        result = await self.session.execute(
            select(ModelCall).where(ModelCall.tenant_id == tenant_id, ModelCall.call_key == call_key)
        )
        return result.scalar_one_or_none()

    async def record(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        call_key: str,
        model: str,
        provider: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd: Decimal,
        latency_ms: float,
        payload_id: uuid.UUID | None,
        ok: bool = True,
        error: str | None = None,
    ) -> bool:
        """Insert the call once; False when ``call_key`` was already recorded (nothing written)."""
        stmt = (
            insert(ModelCall)
            .values(
                tenant_id=tenant_id,
                workflow_id=workflow_id,
                call_key=call_key,
                model=model,
                provider=provider,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost_usd,
                latency_ms=latency_ms,
                ok=ok,
                error=error,
                payload_id=payload_id,
            )
            .on_conflict_do_nothing(index_elements=["call_key"])
            .returning(ModelCall.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def for_workflow(self, tenant_id: str, workflow_id: str) -> list[ModelCall]:
        """Every recorded call of one run, oldest first."""
        result = await self.session.execute(
            select(ModelCall)
            .where(ModelCall.tenant_id == tenant_id, ModelCall.workflow_id == workflow_id)
            .order_by(ModelCall.id)
        )
        return list(result.scalars())

    async def total_cost(self, tenant_id: str, workflow_id: str) -> Decimal:
        """What one run has been billed so far."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(ModelCall.cost_usd), 0)).where(
                ModelCall.tenant_id == tenant_id, ModelCall.workflow_id == workflow_id
            )
        )
        return Decimal(total or 0)
