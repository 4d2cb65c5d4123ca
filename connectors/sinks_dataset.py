"""The dataset sink of connector jobs: records land in ``connector_records``, a run's end
snapshots the job's own records into eval cases (see ``activities/connector_sinks``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.base import SyncRecord
from connectors.sinks import TemplateError, render
from connectors.sinks_records import RecordsSink, SinkContext
from core.connector_contracts import DatasetSinkOptions
from core.db.connector_models import ConnectorJob, ConnectorRecord, ConnectorRecordJob


class DatasetSink(RecordsSink):
    """Pages land in ``connector_records``; the run's end snapshots them (one version per run).

    Each row is also marked as written by this job (``connector_record_jobs``), so the snapshot
    holds the job's own records only, not those another job synced from the same source.
    """

    async def write(
        self,
        session: AsyncSession,
        job: ConnectorJob,
        records: list[SyncRecord],
        ctx: SinkContext | None = None,
    ) -> int:
        written = await super().write(session, job, records, ctx)
        ids = sorted({r.external_id for r in records})
        if ids:
            stmt = insert(ConnectorRecordJob).on_conflict_do_nothing()
            await session.execute(
                stmt,
                [
                    {
                        "tenant_id": job.tenant_id,
                        "job_id": job.id,
                        "connection_id": job.connection_id,
                        "object": job.object,
                        "external_id": external_id,
                    }
                    for external_id in ids
                ],
            )
        return written


async def job_records(session: AsyncSession, job: ConnectorJob) -> list[ConnectorRecord]:
    """The ``connector_records`` rows this job wrote (current content, whoever wrote it last)."""
    return list(
        await session.scalars(
            select(ConnectorRecord)
            .join(
                ConnectorRecordJob,
                (ConnectorRecordJob.tenant_id == ConnectorRecord.tenant_id)
                & (ConnectorRecordJob.connection_id == ConnectorRecord.connection_id)
                & (ConnectorRecordJob.object == ConnectorRecord.object)
                & (ConnectorRecordJob.external_id == ConnectorRecord.external_id),
            )
            .where(
                ConnectorRecord.tenant_id == job.tenant_id,
                ConnectorRecord.connection_id == job.connection_id,
                ConnectorRecord.object == job.object,
                ConnectorRecordJob.job_id == job.id,
            )
        )
    )


def dataset_cases(job: ConnectorJob, rows: list[ConnectorRecord]) -> tuple[list[dict[str, Any]], int]:
    """Eval case dicts of the records (in external-id order) and how many were skipped."""
    options = DatasetSinkOptions.model_validate(job.sink_options or {})
    cases: list[dict[str, Any]] = []
    seen: set[str] = set()
    skipped = 0
    for row in sorted(rows, key=lambda r: r.external_id):
        record = SyncRecord(external_id=row.external_id, modified_at=row.modified_at, data=row.data)
        try:
            case_id = render(options.id, record, job.object).strip()[:200]
            text = render(options.input, record, job.object)
            expected = render(options.expected, record, job.object) if options.expected else None
            contexts = [c for c in (render(t, record, job.object) for t in options.contexts) if c.strip()]
            tags = [t for t in (render(s, record, job.object).strip() for s in options.tags) if t]
        except TemplateError:
            skipped += 1
            continue
        if not case_id or not text.strip() or case_id in seen:
            skipped += 1
            continue
        seen.add(case_id)
        cases.append(
            {
                "id": case_id,
                "input": text,
                "expected": expected if expected and expected.strip() else None,
                "contexts": contexts,
                "tags": tags,
                "metadata": {"source": {"connection": job.connection_id, "object": job.object}},
            }
        )
    return cases, skipped
