"""The sink protocol of connector jobs and the records sink (the ``connector_records`` table).

The records sink upserts on ``UNIQUE (tenant, connection, object, external_id)`` keeping the
latest ``modified_at``, so a page read twice still leaves each record once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.base import SyncRecord
from core.db.connector_models import ConnectorJob, ConnectorRecord


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need besides the records: the run, the page number, prepared documents."""

    workflow_id: str
    page: int
    drafts: list[Any] | None = None


class Sink(Protocol):
    """Writes one page of records inside the caller's transaction; returns records written."""

    async def write(
        self,
        session: AsyncSession,
        job: ConnectorJob,
        records: list[SyncRecord],
        ctx: SinkContext | None = None,
    ) -> int: ...


class RecordsSink:
    """The ``connector_records`` table: one row per (connection, object, external id)."""

    async def write(
        self,
        session: AsyncSession,
        job: ConnectorJob,
        records: list[SyncRecord],
        ctx: SinkContext | None = None,
    ) -> int:
        latest: dict[str, SyncRecord] = {}
        for record in records:  # one row per id per statement (ON CONFLICT cannot hit a row twice)
            seen = latest.get(record.external_id)
            if seen is None or record.modified_at >= seen.modified_at:
                latest[record.external_id] = record
        rows = [
            {
                "tenant_id": job.tenant_id,
                "connection_id": job.connection_id,
                "object": job.object,
                "external_id": r.external_id,
                "job_id": job.id,
                "modified_at": r.modified_at,
                "data": json.loads(json.dumps(r.data, default=str)),
                "writes": 1,
            }
            for r in latest.values()
        ]
        if not rows:
            return 0
        stmt = insert(ConnectorRecord)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "connection_id", "object", "external_id"],
            set_={
                "data": stmt.excluded.data,
                "modified_at": stmt.excluded.modified_at,
                "job_id": stmt.excluded.job_id,
                "writes": ConnectorRecord.writes + 1,
                "synced_at": func.now(),
            },
            where=stmt.excluded.modified_at >= ConnectorRecord.modified_at,
        )
        # executemany: SQLAlchemy batches the rows into multi-row statements it compiles once
        await session.execute(stmt, rows)
        return len(rows)
