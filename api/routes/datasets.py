"""``/v1/datasets``: versioned golden datasets (immutable versions) for evals.

A version is created by uploading JSONL or CSV (``POST /v1/datasets/{id}/versions`` with
``Content-Type: application/jsonl`` / ``application/x-ndjson`` / ``text/csv``, or ``?format=``),
from the tenant's logged gateway calls (``…/versions/from-logs``) or from an eval run's results
(``…/versions/from-run``). Versions and their cases never change once written.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, SessionDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.schemas import StrictModel
from core.db.eval_models import EvalDataset, EvalDatasetVersion
from core.errors import ValidationFailed
from core.governance.audit import append
from core.identity import Permission, Principal
from evals.contracts import EvalCase
from evals.datasets import DatasetFormatError, parse_cases
from evals.repository import DatasetRepository, cases_from_logs, cases_from_run

router = APIRouter(tags=["datasets"])

_SLUG = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/x-jsonlines", "application/json")
_CSV_TYPES = ("text/csv", "application/csv")


class DatasetCreate(StrictModel):
    """A new dataset (without versions yet)."""

    id: str = Field(pattern=_SLUG, description="Slug, unique in the tenant.")
    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)


class DatasetOut(BaseModel):
    id: str
    name: str
    description: str
    latest_version: int
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: EvalDataset) -> DatasetOut:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            latest_version=row.latest_version,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class DatasetPage(BaseModel):
    data: list[DatasetOut]
    next_cursor: str | None = None


class VersionOut(BaseModel):
    dataset_id: str
    version: int
    digest: str
    case_count: int
    source: str
    source_ref: dict[str, Any]
    comment: str
    created_by: str
    created_at: dt.datetime

    @classmethod
    def of(cls, row: EvalDatasetVersion) -> VersionOut:
        return cls(
            dataset_id=row.dataset_id,
            version=row.version,
            digest=row.digest,
            case_count=row.case_count,
            source=row.source,
            source_ref=row.source_ref,
            comment=row.comment,
            created_by=row.created_by,
            created_at=row.created_at,
        )


class CasePage(BaseModel):
    data: list[EvalCase]
    next_cursor: str | None = None


class FromLogsRequest(StrictModel):
    """Cases from logged gateway calls with content (tenant content logging must be on)."""

    model: str | None = Field(None, max_length=200)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = Field(500, ge=1, le=10_000)
    comment: str = Field("", max_length=2000)


class FromRunRequest(StrictModel):
    """Cases of an eval run's dataset version, filtered by outcome."""

    run_id: str = Field(min_length=1, max_length=300)
    only: Literal["all", "passed", "failed"] = "all"
    output_as_expected: bool = Field(False, description="Use the run's outputs as expected answers.")
    comment: str = Field("", max_length=2000)


@router.post("/datasets", response_model=DatasetOut, status_code=201)
async def create_dataset(body: DatasetCreate, session: SessionDep, principal: PrincipalDep) -> DatasetOut:
    """Create an empty dataset; add versions by upload, from logs or from a run."""
    principal.require(Permission.runs_write)
    row = await DatasetRepository.from_session(session).create(
        principal.tenant_id, body.id, body.name or body.id, body.description, principal.actor
    )
    await append(
        session, actor=principal.actor, action="dataset.create", tenant_id=principal.tenant_id, target=body.id
    )
    return DatasetOut.of(row)


@router.get("/datasets", response_model=DatasetPage)
async def list_datasets(
    session: SessionDep, principal: PrincipalDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> DatasetPage:
    """The tenant's datasets, newest first."""
    principal.require(Permission.runs_read)
    after = decode_cursor(cursor)
    key = (str(after[0]), str(after[1])) if after and len(after) == 2 else None
    rows = await DatasetRepository.from_session(session).page(principal.tenant_id, limit=limit + 1, after=key)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id])
    return DatasetPage(data=[DatasetOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
async def get_dataset(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> DatasetOut:
    """One dataset."""
    principal.require(Permission.runs_read)
    return DatasetOut.of(await DatasetRepository.from_session(session).get(principal.tenant_id, dataset_id))


def _format(request: Request, given: str | None) -> Literal["jsonl", "csv"]:
    if given in ("jsonl", "csv"):
        return given  # type: ignore[return-value]
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _JSONL_TYPES:
        return "jsonl"
    if content_type in _CSV_TYPES:
        return "csv"
    raise ValidationFailed("send JSONL (application/jsonl) or CSV (text/csv), or pass ?format=jsonl|csv")


@router.post("/datasets/{dataset_id}/versions", response_model=VersionOut, status_code=201)
async def upload_version(
    dataset_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    format: Annotated[str | None, Query(pattern="^(jsonl|csv)$")] = None,
    comment: Annotated[str, Query(max_length=2000)] = "",
) -> VersionOut:
    """Upload the next immutable version as JSONL or CSV (fields: id, input, expected/reference,
    contexts, tags, metadata)."""
    principal.require(Permission.runs_write)
    fmt = _format(request, format)
    settings = request.app.state.nexus.settings.evals
    data = await request.body()
    try:
        cases = parse_cases(
            data, fmt, max_cases=settings.max_dataset_cases, max_bytes=settings.max_dataset_bytes
        )
    except DatasetFormatError as exc:
        raise ValidationFailed(f"invalid dataset: {exc.message}", line=exc.line) from None
    return await _add(session, principal, dataset_id, cases, "upload", {"format": fmt}, comment)


@router.post("/datasets/{dataset_id}/versions/from-logs", response_model=VersionOut, status_code=201)
async def version_from_logs(
    dataset_id: str, body: FromLogsRequest, session: SessionDep, principal: PrincipalDep
) -> VersionOut:
    """A version from the tenant's logged gateway calls (prompts and answers are logged only for
    tenants with content logging on; reading them needs ``users:read`` as in the log viewer)."""
    principal.require(Permission.runs_write)
    principal.require(Permission.users_read)
    cases = await cases_from_logs(
        session, principal.tenant_id, model=body.model, since=body.since, until=body.until, limit=body.limit
    )
    if not cases:
        raise ValidationFailed("no logged calls with content match")
    ref = {"model": body.model, "since": body.since, "until": body.until, "limit": body.limit}
    return await _add(session, principal, dataset_id, cases, "logs", ref, body.comment)


@router.post("/datasets/{dataset_id}/versions/from-run", response_model=VersionOut, status_code=201)
async def version_from_run(
    dataset_id: str, body: FromRunRequest, session: SessionDep, principal: PrincipalDep
) -> VersionOut:
    """A version from an eval run's cases (e.g. only the failures, or outputs as new references)."""
    principal.require(Permission.runs_write)
    cases = await cases_from_run(
        session, principal.tenant_id, body.run_id, only=body.only, output_as_expected=body.output_as_expected
    )
    if not cases:
        raise ValidationFailed("the run has no matching cases")
    ref = {"run_id": body.run_id, "only": body.only, "output_as_expected": body.output_as_expected}
    return await _add(session, principal, dataset_id, cases, "run", ref, body.comment)


async def _add(
    session: Any,
    principal: Principal,
    dataset_id: str,
    cases: list[EvalCase],
    source: str,
    source_ref: dict[str, Any],
    comment: str,
) -> VersionOut:
    row = await DatasetRepository.from_session(session).add_version(
        principal.tenant_id,
        dataset_id,
        cases,
        source=source,
        created_by=principal.actor,
        source_ref={k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in source_ref.items()},
        comment=comment,
    )
    await append(
        session,
        actor=principal.actor,
        action="dataset.version",
        tenant_id=principal.tenant_id,
        target=f"{dataset_id}@{row.version}",
        data={"source": source, "cases": row.case_count, "digest": row.digest},
    )
    return VersionOut.of(row)


@router.get("/datasets/{dataset_id}/versions", response_model=list[VersionOut])
async def list_versions(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> list[VersionOut]:
    """Every version, oldest first."""
    principal.require(Permission.runs_read)
    rows = await DatasetRepository.from_session(session).versions(principal.tenant_id, dataset_id)
    return [VersionOut.of(r) for r in rows]


@router.get("/datasets/{dataset_id}/versions/{number}", response_model=VersionOut)
async def get_version(
    dataset_id: str, number: int, session: SessionDep, principal: PrincipalDep
) -> VersionOut:
    """One version (digest, size, provenance)."""
    principal.require(Permission.runs_read)
    return VersionOut.of(
        await DatasetRepository.from_session(session).version(principal.tenant_id, dataset_id, number)
    )


@router.get("/datasets/{dataset_id}/versions/{number}/cases", response_model=CasePage)
async def list_cases(
    dataset_id: str,
    number: int,
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> CasePage:
    """The cases of a version in dataset order."""
    principal.require(Permission.runs_read)
    after = decode_cursor(cursor)
    position = int(after[0]) if after and isinstance(after[0], int) else -1
    rows = await DatasetRepository.from_session(session).case_page(
        principal.tenant_id, dataset_id, number, limit=limit + 1, after=position
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1][0]])
    return CasePage(data=[c for _, c in rows], next_cursor=next_cursor)
