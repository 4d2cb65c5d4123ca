"""Per-step progress of a pipeline run: one stored event plus the ``runs`` row's step map.

While a run is open, ``runs.result`` holds ``{"progress": {step_id: state}}``; the final
result written by ``finish_run`` keeps the same key. Both writes share the caller's
transaction, so a retried activity lands on the same event seq and the same map entry.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import func, literal, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from core import events
from core.db.models import Run


async def set_step_state(
    session: AsyncSession, tenant_id: str, workflow_id: str, step_id: str, state: str
) -> None:
    """Set ``runs.result.progress[step_id] = state`` (tenant-scoped; no row, no change)."""
    current = func.coalesce(Run.result, literal({}, JSONB))
    progress = func.coalesce(current.op("->")("progress"), literal({}, JSONB))
    patched = progress.op("||")(literal({step_id: state}, JSONB))
    await session.execute(
        update(Run)
        .where(Run.tenant_id == tenant_id, Run.workflow_id == workflow_id)
        .values(
            result=current.op("||")(func.jsonb_build_object("progress", patched)),
            updated_at=dt.datetime.now(dt.UTC),
        )
        .execution_options(synchronize_session=False)
    )


async def record(
    session: AsyncSession,
    *,
    tenant_id: str,
    workflow_id: str,
    seq: int,
    type: str,
    data: dict[str, Any],
    step_id: str | None = None,
    state: str | None = None,
) -> events.Event:
    """Store one event (idempotent on seq) and update the step's state; caller commits."""
    if step_id is not None and state is not None:
        await set_step_state(session, tenant_id, workflow_id, step_id, state)
    clean = json.loads(json.dumps(data, default=str))
    return await events.store(
        session, tenant_id=tenant_id, workflow_id=workflow_id, type=type, data=clean, seq=seq
    )
