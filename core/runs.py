"""The ``runs`` index: every workflow started through the API (or by a schedule).

All SQL for the table lives in :class:`RunRepository`; every query filters on ``tenant_id``, so
another tenant's run is simply :class:`~core.errors.NotFound`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowExecutionStatus

from core.contracts import TERMINAL_STATUSES, RunStatus
from core.db.models import Run
from core.errors import BadRequest, NotFound

_STATUS = {
    WorkflowExecutionStatus.RUNNING: RunStatus.running,
    WorkflowExecutionStatus.COMPLETED: RunStatus.completed,
    WorkflowExecutionStatus.FAILED: RunStatus.failed,
    WorkflowExecutionStatus.CANCELED: RunStatus.cancelled,
    WorkflowExecutionStatus.TERMINATED: RunStatus.terminated,
    WorkflowExecutionStatus.TIMED_OUT: RunStatus.timed_out,
    WorkflowExecutionStatus.CONTINUED_AS_NEW: RunStatus.continued_as_new,
}


def status_from_temporal(status: WorkflowExecutionStatus | None) -> RunStatus:
    """Map a Temporal execution status to our run status (unknown/None counts as running)."""
    return _STATUS.get(status, RunStatus.running) if status is not None else RunStatus.running


def is_terminal(status: str) -> bool:
    """Whether a stored run status is final."""
    return status in TERMINAL_STATUSES


def workflow_id(kind: str, tenant_id: str, run_key: str) -> str:
    """The business workflow id ``{kind}:{tenant}:{id}``."""
    return f"{kind}:{tenant_id}:{run_key}"


def key_from_idempotency(idempotency_key: str) -> str:
    """A stable, id-safe run key derived from a client's ``Idempotency-Key``."""
    return "idem-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def encode_cursor(created_at: dt.datetime, wid: str) -> str:
    raw = json.dumps([created_at.isoformat(), wid]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, wid = json.loads(base64.urlsafe_b64decode(padded))
        return dt.datetime.fromisoformat(created), str(wid)
    except (ValueError, TypeError) as exc:
        raise BadRequest("invalid cursor") from exc


class RunRepository:
    """Tenant-scoped access to the ``runs`` table."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> RunRepository:
        return cls(session)

    async def create(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        kind: str,
        created_by: str,
        idempotency_key: str | None = None,
        input_summary: dict[str, Any] | None = None,
    ) -> tuple[Run, bool]:
        """Insert a run unless its id or idempotency key exists; returns (run, created)."""
        stmt = (
            insert(Run)
            .values(
                workflow_id=workflow_id,
                tenant_id=tenant_id,
                kind=kind,
                status=RunStatus.running.value,
                created_by=created_by,
                idempotency_key=idempotency_key,
                input_summary=input_summary or {},
                cost_usd=Decimal(0),
            )
            .on_conflict_do_nothing()
            .returning(Run.workflow_id)
        )
        created = (await self.session.execute(stmt)).scalar_one_or_none() is not None
        if not created and idempotency_key is not None:
            existing = await self.by_idempotency_key(tenant_id, kind, idempotency_key)
            if existing is not None:
                return existing, False
        return await self.get(tenant_id, workflow_id), created

    async def get(self, tenant_id: str, workflow_id: str) -> Run:
        """The run, or :class:`NotFound` (also for another tenant's run)."""
        run = await self.find(tenant_id, workflow_id)
        if run is None:
            raise NotFound("run not found")
        return run

    async def find(self, tenant_id: str, workflow_id: str) -> Run | None:
        result = await self.session.execute(
            select(Run)
            .where(Run.tenant_id == tenant_id, Run.workflow_id == workflow_id)
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def by_idempotency_key(self, tenant_id: str, kind: str, idempotency_key: str) -> Run | None:
        result = await self.session.execute(
            select(Run).where(
                Run.tenant_id == tenant_id, Run.kind == kind, Run.idempotency_key == idempotency_key
            )
        )
        return result.scalar_one_or_none()

    async def list(
        self,
        tenant_id: str,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Run], str | None]:
        """Newest first, keyset-paginated; returns (page, next_cursor)."""
        query = select(Run).where(Run.tenant_id == tenant_id)
        if kind:
            query = query.where(Run.kind == kind)
        if status:
            query = query.where(Run.status == status)
        if cursor:
            created, wid = decode_cursor(cursor)
            query = query.where(
                or_(Run.created_at < created, and_(Run.created_at == created, Run.workflow_id < wid))
            )
        query = query.order_by(Run.created_at.desc(), Run.workflow_id.desc()).limit(limit + 1)
        rows = list((await self.session.execute(query)).scalars())
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1].created_at, rows[-1].workflow_id)
        return rows, next_cursor

    async def set_status(self, tenant_id: str, workflow_id: str, status: RunStatus) -> None:
        """Record a status observed in Temporal (closes the run if it is terminal)."""
        values: dict[str, Any] = {"status": status.value, "updated_at": dt.datetime.now(dt.UTC)}
        if is_terminal(status):
            values["closed_at"] = dt.datetime.now(dt.UTC)
        await self.session.execute(
            update(Run).where(Run.tenant_id == tenant_id, Run.workflow_id == workflow_id).values(**values)
        )

    async def finish(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        kind: str,
        status: RunStatus,
        result: dict[str, Any] | None,
        error: str | None,
        cost_usd: Decimal,
        created_by: str = "",
        run_id: str | None = None,
    ) -> None:
        """Write a run's final state; idempotent, and creates the row for schedule-started runs."""
        now = dt.datetime.now(dt.UTC)
        final = {
            "status": status.value,
            "result": result,
            "error": error,
            "cost_usd": cost_usd,
            "updated_at": now,
            "closed_at": now if is_terminal(status) else None,
        }
        stmt = insert(Run).values(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            kind=kind,
            created_by=created_by or "schedule",
            run_id=run_id,
            input_summary={},
            **final,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[Run.workflow_id],
            set_={**final, "run_id": func.coalesce(stmt.excluded.run_id, Run.run_id)},
            # Never touch another tenant's row, even on a forged workflow id.
            where=Run.tenant_id == tenant_id,
        )
        await self.session.execute(stmt)

    async def set_run_id(self, tenant_id: str, workflow_id: str, run_id: str | None) -> None:
        await self.session.execute(
            update(Run)
            .where(Run.tenant_id == tenant_id, Run.workflow_id == workflow_id, Run.run_id.is_(None))
            .values(run_id=run_id)
        )
