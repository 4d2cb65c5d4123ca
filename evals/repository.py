"""All SQL of datasets, eval runs and case results (tenant-scoped; callers own the transaction)."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.eval_models import EvalCaseResult, EvalDataset, EvalDatasetCase, EvalDatasetVersion, EvalRun
from core.db.gateway_models import InferenceLog
from core.errors import Conflict, NotFound, ValidationFailed
from core.payloads import PayloadStore
from evals.contracts import EvalCase
from evals.datasets import case_hash

# asyncpg takes at most 32767 bind parameters per statement; a case row has 7 columns.
_INSERT_CHUNK = 2000


def digest_of(hashes: list[str]) -> str:
    """The version digest: SHA-256 over the ordered case hashes."""
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


class DatasetRepository:
    """Tenant-scoped access to datasets, their immutable versions and cases."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> DatasetRepository:
        return cls(session)

    async def create(
        self, tenant_id: str, dataset_id: str, name: str, description: str, created_by: str
    ) -> EvalDataset:
        """Insert a dataset without versions; :class:`Conflict` when the id is taken."""
        inserted = (
            await self.session.execute(
                insert(EvalDataset)
                .values(
                    tenant_id=tenant_id,
                    id=dataset_id,
                    name=name,
                    description=description,
                    latest_version=0,
                    created_by=created_by,
                )
                .on_conflict_do_nothing()
                .returning(EvalDataset.id)
            )
        ).scalar_one_or_none()
        if inserted is None:
            raise Conflict(f"dataset {dataset_id!r} already exists")
        return await self.get(tenant_id, dataset_id)

    async def get(self, tenant_id: str, dataset_id: str) -> EvalDataset:
        """The dataset, or :class:`NotFound` (also for another tenant's)."""
        row = (
            await self.session.execute(
                select(EvalDataset)
                .where(EvalDataset.tenant_id == tenant_id, EvalDataset.id == dataset_id)
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("dataset not found")
        return row

    async def page(
        self, tenant_id: str, *, limit: int, after: tuple[str, str] | None = None
    ) -> list[EvalDataset]:
        """Newest first, keyset-paginated on (created_at, id)."""
        query = select(EvalDataset).where(EvalDataset.tenant_id == tenant_id)
        if after is not None:
            created = dt.datetime.fromisoformat(after[0])
            query = query.where(
                or_(
                    EvalDataset.created_at < created,
                    and_(EvalDataset.created_at == created, EvalDataset.id < after[1]),
                )
            )
        query = query.order_by(EvalDataset.created_at.desc(), EvalDataset.id.desc()).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def add_version(
        self,
        tenant_id: str,
        dataset_id: str,
        cases: list[EvalCase],
        *,
        source: str,
        created_by: str,
        source_ref: dict[str, Any] | None = None,
        comment: str = "",
    ) -> EvalDatasetVersion:
        """Append the next immutable version with its cases (the row lock serialises writers)."""
        if not cases:
            raise ValidationFailed("a dataset version needs at least one case")
        row = (
            await self.session.execute(
                select(EvalDataset)
                .where(EvalDataset.tenant_id == tenant_id, EvalDataset.id == dataset_id)
                .with_for_update()
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("dataset not found")
        number = row.latest_version + 1
        hashes = [case_hash(c) for c in cases]
        version = EvalDatasetVersion(
            tenant_id=tenant_id,
            dataset_id=dataset_id,
            version=number,
            digest=digest_of(hashes),
            case_count=len(cases),
            source=source,
            source_ref=source_ref or {},
            comment=comment,
            created_by=created_by,
        )
        self.session.add(version)
        await self.session.flush()
        values = [
            {
                "tenant_id": tenant_id,
                "dataset_id": dataset_id,
                "version": number,
                "case_id": case.id,
                "position": i,
                "case_hash": h,
                "data": case.model_dump(mode="json"),
            }
            for i, (case, h) in enumerate(zip(cases, hashes, strict=True))
        ]
        for start in range(0, len(values), _INSERT_CHUNK):
            await self.session.execute(insert(EvalDatasetCase).values(values[start : start + _INSERT_CHUNK]))
        await self.session.execute(
            update(EvalDataset)
            .where(EvalDataset.tenant_id == tenant_id, EvalDataset.id == dataset_id)
            .values(latest_version=number, updated_at=dt.datetime.now(dt.UTC))
        )
        return version

    async def version(self, tenant_id: str, dataset_id: str, number: int | None = None) -> EvalDatasetVersion:
        """One version (the latest when ``number`` is None), or :class:`NotFound`."""
        if number is None:
            number = (await self.get(tenant_id, dataset_id)).latest_version
        row = (
            await self.session.execute(
                select(EvalDatasetVersion).where(
                    EvalDatasetVersion.tenant_id == tenant_id,
                    EvalDatasetVersion.dataset_id == dataset_id,
                    EvalDatasetVersion.version == number,
                )
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("dataset version not found")
        return row

    async def versions(self, tenant_id: str, dataset_id: str) -> list[EvalDatasetVersion]:
        """Every version of a dataset, oldest first."""
        await self.get(tenant_id, dataset_id)
        rows = await self.session.execute(
            select(EvalDatasetVersion)
            .where(EvalDatasetVersion.tenant_id == tenant_id, EvalDatasetVersion.dataset_id == dataset_id)
            .order_by(EvalDatasetVersion.version)
        )
        return list(rows.scalars())

    async def case_ids(self, tenant_id: str, dataset_id: str, version: int) -> list[str]:
        """The case ids of a version in dataset order."""
        rows = await self.session.execute(
            select(EvalDatasetCase.case_id)
            .where(
                EvalDatasetCase.tenant_id == tenant_id,
                EvalDatasetCase.dataset_id == dataset_id,
                EvalDatasetCase.version == version,
            )
            .order_by(EvalDatasetCase.position)
        )
        return list(rows.scalars())

    async def mean_input_chars(self, tenant_id: str, dataset_id: str, version: int) -> float:
        """The mean length of the version's case inputs (for cost estimates)."""
        value = await self.session.scalar(
            select(func.avg(func.length(EvalDatasetCase.data["input"].astext))).where(
                EvalDatasetCase.tenant_id == tenant_id,
                EvalDatasetCase.dataset_id == dataset_id,
                EvalDatasetCase.version == version,
            )
        )
        return float(value or 0)

    async def cases(
        self, tenant_id: str, dataset_id: str, version: int, case_ids: list[str]
    ) -> dict[str, tuple[int, EvalCase]]:
        """(position, case) by id for the given ids of a version."""
        rows = await self.session.execute(
            select(EvalDatasetCase).where(
                EvalDatasetCase.tenant_id == tenant_id,
                EvalDatasetCase.dataset_id == dataset_id,
                EvalDatasetCase.version == version,
                EvalDatasetCase.case_id.in_(case_ids),
            )
        )
        return {r.case_id: (r.position, EvalCase.model_validate(r.data)) for r in rows.scalars()}

    async def case_page(
        self, tenant_id: str, dataset_id: str, version: int, *, limit: int, after: int = -1
    ) -> list[tuple[int, EvalCase]]:
        """Cases of a version in order, keyset-paginated on position."""
        await self.version(tenant_id, dataset_id, version)
        rows = await self.session.execute(
            select(EvalDatasetCase)
            .where(
                EvalDatasetCase.tenant_id == tenant_id,
                EvalDatasetCase.dataset_id == dataset_id,
                EvalDatasetCase.version == version,
                EvalDatasetCase.position > after,
            )
            .order_by(EvalDatasetCase.position)
            .limit(limit)
        )
        return [(r.position, EvalCase.model_validate(r.data)) for r in rows.scalars()]


class EvalRunRepository:
    """Tenant-scoped access to ``eval_runs`` and ``eval_case_results``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> EvalRunRepository:
        return cls(session)

    async def record(
        self,
        *,
        run_id: str,
        tenant_id: str,
        dataset_id: str,
        dataset_version: int,
        target: dict[str, Any],
        metrics: list[Any],
        baseline_run_id: str | None,
        schedule_id: str | None,
        budget_usd: float | None,
        case_count: int,
        created_by: str,
    ) -> None:
        """Insert the run once (the API does it at start; a schedule-started run on its first step)."""
        await self.session.execute(
            insert(EvalRun)
            .values(
                id=run_id,
                tenant_id=tenant_id,
                dataset_id=dataset_id,
                dataset_version=dataset_version,
                target=target,
                metrics=metrics,
                baseline_run_id=baseline_run_id,
                schedule_id=schedule_id,
                status="running",
                budget_usd=Decimal(str(budget_usd)) if budget_usd is not None else None,
                case_count=case_count,
                cost_usd=Decimal(0),
                created_by=created_by or "schedule",
            )
            .on_conflict_do_nothing(index_elements=[EvalRun.id])
        )

    async def get(self, tenant_id: str, run_id: str) -> EvalRun:
        """The run, or :class:`NotFound` (also for another tenant's)."""
        row = (
            await self.session.execute(
                select(EvalRun)
                .where(EvalRun.tenant_id == tenant_id, EvalRun.id == run_id)
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("eval run not found")
        return row

    async def page(
        self,
        tenant_id: str,
        *,
        limit: int,
        after: tuple[str, str] | None = None,
        dataset_id: str | None = None,
        schedule_id: str | None = None,
    ) -> list[EvalRun]:
        """Newest first, keyset-paginated on (created_at, id)."""
        query = select(EvalRun).where(EvalRun.tenant_id == tenant_id)
        if dataset_id:
            query = query.where(EvalRun.dataset_id == dataset_id)
        if schedule_id:
            query = query.where(EvalRun.schedule_id == schedule_id)
        if after is not None:
            created = dt.datetime.fromisoformat(after[0])
            query = query.where(
                or_(EvalRun.created_at < created, and_(EvalRun.created_at == created, EvalRun.id < after[1]))
            )
        query = query.order_by(EvalRun.created_at.desc(), EvalRun.id.desc()).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def update(self, tenant_id: str, run_id: str, **values: Any) -> None:
        """Set columns of one run (aggregates, regression, status, cost, finished_at)."""
        await self.session.execute(
            update(EvalRun).where(EvalRun.tenant_id == tenant_id, EvalRun.id == run_id).values(**values)
        )

    # --- case results ---------------------------------------------------------------------

    async def results_for(
        self, tenant_id: str, run_id: str, case_ids: list[str]
    ) -> dict[str, EvalCaseResult]:
        """The stored results of the given cases, by case id."""
        rows = await self.session.execute(
            select(EvalCaseResult).where(
                EvalCaseResult.tenant_id == tenant_id,
                EvalCaseResult.run_id == run_id,
                EvalCaseResult.case_id.in_(case_ids),
            )
        )
        return {r.case_id: r for r in rows.scalars()}

    async def insert_result(self, values: dict[str, Any]) -> bool:
        """Insert one case result once; False when the (run, case) row existed (nothing written)."""
        stmt = (
            insert(EvalCaseResult)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["run_id", "case_id"])
            .returning(EvalCaseResult.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def insert_results(self, rows: list[dict[str, Any]]) -> set[str]:
        """Insert case results in one statement, each (run, case) once; the case ids written
        (a row that existed is left as it was and its case id is not returned)."""
        if not rows:
            return set()
        stmt = (
            insert(EvalCaseResult)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["run_id", "case_id"])
            .returning(EvalCaseResult.case_id)
        )
        return set((await self.session.execute(stmt)).scalars())

    async def all_results(self, tenant_id: str, run_id: str) -> list[EvalCaseResult]:
        """Every result of a run, in dataset order."""
        rows = await self.session.execute(
            select(EvalCaseResult)
            .where(EvalCaseResult.tenant_id == tenant_id, EvalCaseResult.run_id == run_id)
            .order_by(EvalCaseResult.position)
        )
        return list(rows.scalars())

    async def result_page(
        self, tenant_id: str, run_id: str, *, limit: int, after: int = -1
    ) -> list[EvalCaseResult]:
        """Results of a run in dataset order, keyset-paginated on position."""
        rows = await self.session.execute(
            select(EvalCaseResult)
            .where(
                EvalCaseResult.tenant_id == tenant_id,
                EvalCaseResult.run_id == run_id,
                EvalCaseResult.position > after,
            )
            .order_by(EvalCaseResult.position)
            .limit(limit)
        )
        return list(rows.scalars())

    async def counts(self, tenant_id: str, run_id: str) -> tuple[int, Decimal]:
        """(results stored, their total cost) of a run."""
        row = (
            await self.session.execute(
                select(func.count(), func.coalesce(func.sum(EvalCaseResult.cost_usd), 0)).where(
                    EvalCaseResult.tenant_id == tenant_id, EvalCaseResult.run_id == run_id
                )
            )
        ).one()
        return int(row[0]), Decimal(row[1])


async def cases_from_logs(
    session: AsyncSession,
    tenant_id: str,
    *,
    model: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 1000,
) -> list[EvalCase]:
    """Cases from the tenant's logged gateway calls that stored content (input = last user
    message, expected = the logged answer), newest first."""
    query = select(InferenceLog).where(
        InferenceLog.tenant_id == tenant_id,
        InferenceLog.status == "ok",
        InferenceLog.content.is_not(None),
    )
    if model is not None:
        query = query.where(InferenceLog.model == model)
    if since is not None:
        query = query.where(InferenceLog.created_at >= since)
    if until is not None:
        query = query.where(InferenceLog.created_at < until)
    query = query.order_by(InferenceLog.created_at.desc(), InferenceLog.id.desc()).limit(limit)
    cases: list[EvalCase] = []
    for row in (await session.execute(query)).scalars():
        content = row.content or {}
        users = [m for m in content.get("messages") or [] if m.get("role") == "user"]
        question = _message_text(users[-1]) if users else ""
        if not question:
            continue
        cases.append(
            EvalCase(
                id=f"log-{row.request_id}"[:200],
                input=question,
                expected=content.get("answer") or None,
                tags=["from-logs"],
                metadata={"model": row.model, "request_id": row.request_id},
            )
        )
    return cases


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


async def cases_from_run(
    session: AsyncSession,
    tenant_id: str,
    run_id: str,
    *,
    only: str = "all",
    output_as_expected: bool = False,
    store: PayloadStore | None = None,
) -> list[EvalCase]:
    """The cases of an eval run's dataset version, filtered by outcome (``passed`` / ``failed`` /
    ``all``), optionally with the run's outputs as the new expected answers."""
    runs = EvalRunRepository.from_session(session)
    run = await runs.get(tenant_id, run_id)
    rows = await runs.all_results(tenant_id, run_id)
    if only == "passed":
        rows = [r for r in rows if r.passed]
    elif only == "failed":
        rows = [r for r in rows if r.passed is False or r.error is not None]
    by_id = await DatasetRepository.from_session(session).cases(
        tenant_id, run.dataset_id, run.dataset_version, [r.case_id for r in rows]
    )
    store = store or PayloadStore()
    cases: list[EvalCase] = []
    for row in rows:
        if row.case_id not in by_id:
            continue
        case = by_id[row.case_id][1]
        if output_as_expected:
            if row.output_id is None:
                continue
            case = case.model_copy(
                update={"expected": await store.get(session, tenant_id, str(row.output_id))}
            )
        cases.append(case)
    return cases
