"""``/v1/pipelines``: versioned definitions (YAML or JSON), their diff and schema, and runs.

A definition document is the pipeline definition itself with a top-level ``id`` (the slug) on
creation; ``comment`` is accepted on new versions. Runs pin a version; cancel and follow them
through ``/v1/runs/{id}/cancel`` and ``/v1/runs/{id}/events`` (kind ``pipeline``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowHandle

from api.deps import AppState, PrincipalDep, SessionDep, StateDep, TemporalDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.routes.pipelines_view import DiffOut, PipelineDetail, PipelineOut, PipelinePage, VersionOut, document
from api.routes.runs import RunDetail
from api.run_start import start_once
from api.schemas import StrictModel
from core import events
from core.contracts import RunStatus
from core.db.pipeline_models import PipelineVersion
from core.errors import NotFound, ValidationFailed
from core.governance.audit import append
from core.identity import Permission, Principal
from core.payloads import PayloadStore
from core.pipelines import diff, service
from core.pipelines.contracts import RUN_KIND, WORKFLOW_NAME, PipelineInput, RunOptions
from core.pipelines.definition import PipelineDefinition, json_schema
from core.pipelines.repository import PipelineRepository
from core.pipelines.settings import PipelineSettings, pipeline_settings
from core.runs import RunRepository, key_from_idempotency, workflow_id

router = APIRouter(tags=["pipelines"])

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
INLINE_DEFINITION_BYTES = 32_000
RUN_TIMEOUT = dt.timedelta(days=30)


class RunRequest(StrictModel):
    """Start a run: inputs are checked against the version's declared inputs."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(None, ge=1, description="Pinned version; the latest when omitted.")


def _settings(request: Request) -> PipelineSettings:
    return pipeline_settings(request.app.state.nexus.settings)


@router.get("/pipelines/schema")
async def pipeline_schema() -> dict[str, Any]:
    """The published JSON Schema of a pipeline definition (no authentication needed)."""
    return json_schema()


@router.post("/pipelines", response_model=PipelineDetail, status_code=201)
async def create_pipeline(request: Request, session: SessionDep, principal: PrincipalDep) -> PipelineDetail:
    """Create a pipeline (version 1) from a YAML or JSON document with a top-level ``id`` slug."""
    principal.require(Permission.runs_write)
    raw = await document(request)
    pipeline_id = raw.pop("id", None)
    if not isinstance(pipeline_id, str):
        raise ValidationFailed("the document needs a top-level 'id' (the pipeline slug)")
    pipeline, version = await service.create_pipeline(
        session,
        tenant_id=principal.tenant_id,
        pipeline_id=pipeline_id,
        raw=raw,
        actor=principal.actor,
        settings=_settings(request),
    )
    return PipelineDetail(**PipelineOut.of(pipeline).model_dump(), latest=VersionOut.of(version))


@router.post("/pipelines/{pipeline_id}/versions", response_model=VersionOut, status_code=201)
async def create_version(
    pipeline_id: str, request: Request, session: SessionDep, principal: PrincipalDep
) -> VersionOut:
    """Append a new immutable version (runs already started keep theirs)."""
    principal.require(Permission.runs_write)
    raw = await document(request)
    given = raw.pop("id", pipeline_id)
    comment = raw.pop("comment", "")
    if given != pipeline_id or not isinstance(comment, str):
        raise ValidationFailed("'id' must match the URL and 'comment' must be text")
    version = await service.add_version(
        session,
        tenant_id=principal.tenant_id,
        pipeline_id=pipeline_id,
        raw=raw,
        actor=principal.actor,
        settings=_settings(request),
        comment=comment,
    )
    return VersionOut.of(version)


@router.get("/pipelines", response_model=PipelinePage)
async def list_pipelines(
    session: SessionDep, principal: PrincipalDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> PipelinePage:
    """The tenant's pipelines, newest first."""
    principal.require(Permission.runs_read)
    after = decode_cursor(cursor)
    key = (str(after[0]), str(after[1])) if after and len(after) == 2 else None
    rows = await PipelineRepository.from_session(session).page(
        principal.tenant_id, limit=limit + 1, after=key
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id])
    return PipelinePage(data=[PipelineOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/pipelines/{pipeline_id}", response_model=PipelineDetail)
async def get_pipeline(pipeline_id: str, session: SessionDep, principal: PrincipalDep) -> PipelineDetail:
    """One pipeline with its latest version."""
    principal.require(Permission.runs_read)
    repo = PipelineRepository.from_session(session)
    pipeline = await repo.get(principal.tenant_id, pipeline_id)
    latest = await repo.version(principal.tenant_id, pipeline_id, pipeline.latest_version)
    return PipelineDetail(**PipelineOut.of(pipeline).model_dump(), latest=VersionOut.of(latest))


@router.get("/pipelines/{pipeline_id}/versions", response_model=list[VersionOut])
async def list_versions(pipeline_id: str, session: SessionDep, principal: PrincipalDep) -> list[VersionOut]:
    """Every version, oldest first (without the definitions)."""
    principal.require(Permission.runs_read)
    rows = await PipelineRepository.from_session(session).versions(principal.tenant_id, pipeline_id)
    return [VersionOut.of(r, full=False) for r in rows]


@router.get("/pipelines/{pipeline_id}/versions/{number}", response_model=VersionOut)
async def get_version(
    pipeline_id: str, number: int, session: SessionDep, principal: PrincipalDep
) -> VersionOut:
    """One version with its definition and canonical YAML."""
    principal.require(Permission.runs_read)
    return VersionOut.of(
        await PipelineRepository.from_session(session).version(principal.tenant_id, pipeline_id, number)
    )


@router.get("/pipelines/{pipeline_id}/diff", response_model=DiffOut)
async def diff_versions(
    pipeline_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    from_version: Annotated[int, Query(alias="from", ge=1)],
    to_version: Annotated[int, Query(alias="to", ge=1)],
) -> DiffOut:
    """A unified diff of two versions' canonical YAML and the added/removed/changed steps."""
    principal.require(Permission.runs_read)
    repo = PipelineRepository.from_session(session)
    old = await repo.version(principal.tenant_id, pipeline_id, from_version)
    new = await repo.version(principal.tenant_id, pipeline_id, to_version)
    return DiffOut(
        pipeline_id=pipeline_id,
        from_version=from_version,
        to_version=to_version,
        unified=diff.unified(old.canonical_yaml, new.canonical_yaml, f"v{from_version}", f"v{to_version}"),
        summary=diff.summary(
            PipelineDefinition.model_validate(old.definition),
            PipelineDefinition.model_validate(new.definition),
        ),
    )


@router.post("/pipelines/{pipeline_id}/runs", response_model=RunDetail, status_code=202)
async def start_run(
    pipeline_id: str,
    body: RunRequest,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> RunDetail:
    """Start a run of a pinned version (202). The same ``Idempotency-Key`` returns the same run."""
    principal.require(Permission.runs_write)
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ValidationFailed("Idempotency-Key must be 1-200 printable ASCII characters")
    tenant = principal.tenant_id
    runs = RunRepository.from_session(session)
    if idempotency_key is not None:
        existing = await runs.by_idempotency_key(tenant, RUN_KIND, idempotency_key)
        if existing is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return RunDetail.detail(
                existing,
                await events.stored_events(session, tenant_id=tenant, workflow_id=existing.workflow_id),
            )
    version = await PipelineRepository.from_session(session).version(tenant, pipeline_id, body.version)
    defn = PipelineDefinition.model_validate(version.definition)
    inputs = service.run_inputs(defn, body.inputs)
    run_key = key_from_idempotency(idempotency_key) if idempotency_key else uuid.uuid4().hex
    return await _launch(
        session,
        response,
        principal,
        state,
        temporal,
        version,
        defn,
        inputs,
        wid=workflow_id(RUN_KIND, tenant, run_key),
        idempotency_key=idempotency_key,
        options=RunOptions(),
    )


@router.post("/pipelines/{pipeline_id}/runs/{run_id}/retry", response_model=RunDetail, status_code=202)
async def retry_run(
    pipeline_id: str,
    run_id: str,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
) -> RunDetail:
    """A new run of the same version and inputs that reuses the outputs of the steps before the
    failed one and starts at the failed step (only for runs that ended ``failed``)."""
    principal.require(Permission.runs_write)
    tenant = principal.tenant_id
    source = await RunRepository.from_session(session).get(tenant, run_id)
    summary = source.input_summary or {}
    if source.kind != RUN_KIND or summary.get("pipeline") != pipeline_id:
        raise NotFound("run not found")
    version = await PipelineRepository.from_session(session).version(
        tenant, pipeline_id, int(summary["version"])
    )
    defn = PipelineDefinition.model_validate(version.definition)
    resume_from, prior = service.retry_outputs(defn, source.result, source.status)
    inputs = json.loads(await PayloadStore().get(session, tenant, str(summary["inputs_ref"])))
    options = RunOptions(resume_from=resume_from, prior_outputs=prior, source_run=source.workflow_id)
    wid = workflow_id(RUN_KIND, tenant, uuid.uuid4().hex)
    return await _launch(
        session,
        response,
        principal,
        state,
        temporal,
        version,
        defn,
        inputs,
        wid=wid,
        idempotency_key=None,
        options=options,
    )


async def _launch(
    session: AsyncSession,
    response: Response,
    principal: Principal,
    state: AppState,
    temporal: Client,
    version: PipelineVersion,
    defn: PipelineDefinition,
    inputs: dict[str, Any],
    *,
    wid: str,
    idempotency_key: str | None,
    options: RunOptions,
) -> RunDetail:
    tenant = principal.tenant_id
    summary: dict[str, Any] = {
        "pipeline": version.pipeline_id,
        "version": version.version,
        "input_names": sorted(inputs),
        "resume_from": options.resume_from,
        "source_run": options.source_run,
    }
    # Committed before the start, so the workflow's progress updates find the runs row. Inputs
    # may be confidential and large: stored once, referenced from the summary.
    async with state.sessions() as early, early.begin():
        stored = await PayloadStore().put(
            early,
            tenant,
            json.dumps(inputs),
            idempotency_key=f"{wid}:inputs",
            content_type="application/json",
        )
        summary["inputs_ref"] = stored.id
        run, created = await RunRepository.from_session(early).create(
            tenant_id=tenant,
            workflow_id=wid,
            kind=RUN_KIND,
            created_by=principal.actor,
            idempotency_key=idempotency_key,
            input_summary=summary,
        )
    runs = RunRepository.from_session(session)
    if not created:  # a concurrent double submit inserted it first
        response.headers["Idempotent-Replayed"] = "true"
        return RunDetail.detail(await runs.get(tenant, run.workflow_id), [])
    small = len(json.dumps(version.definition)) <= INLINE_DEFINITION_BYTES
    inp = PipelineInput(
        tenant_id=tenant,
        pipeline_id=version.pipeline_id,
        version=version.version,
        definition=defn if small else None,
        inputs=inputs,
        options=options,
        created_by=principal.actor,
    )
    try:
        handle = await _start(temporal, wid, inp, principal, state.settings.temporal.task_queue)
    except Exception:
        async with state.sessions() as late, late.begin():
            await RunRepository.from_session(late).set_status(tenant, wid, RunStatus.failed)
        raise
    await runs.set_run_id(tenant, wid, handle.result_run_id)
    await append(
        session,
        actor=principal.actor,
        action="run.start",
        tenant_id=tenant,
        target=wid,
        data={
            "kind": RUN_KIND,
            "pipeline": version.pipeline_id,
            "version": version.version,
            "resume_from": options.resume_from,
        },
    )
    return RunDetail.detail(await runs.get(tenant, wid), [])


async def _start(
    temporal: Client, wid: str, inp: PipelineInput, principal: Principal, task_queue: str
) -> WorkflowHandle[Any, Any]:
    return await start_once(
        temporal,
        WORKFLOW_NAME,
        inp,
        workflow_id=wid,
        kind=RUN_KIND,
        principal=principal,
        task_queue=task_queue,
        execution_timeout=RUN_TIMEOUT,
    )
