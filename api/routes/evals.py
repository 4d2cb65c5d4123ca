"""``/v1/evals``: eval runs (durable ``EvalRun`` workflows), A/B comparison, scheduled evals.

Runs are also ``runs`` of kind ``eval``: follow one with ``/v1/runs/{id}/events`` (SSE:
``eval.progress`` with partial aggregates) and cancel it with ``/v1/runs/{id}/cancel``.
Schedules are Temporal Schedules (``evals-schedule:{tenant}:{id}``), visible in the Temporal UI.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AppState, PrincipalDep, SessionDep, StateDep, TemporalDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.run_start import run_search_attributes, start_once
from api.schemas import StrictModel
from core.contracts import SA_TENANT_ID, RunStatus
from core.db.eval_models import EvalCaseResult, EvalRun
from core.errors import Conflict, NotFound, ValidationFailed
from core.governance.audit import append
from core.identity import Permission, Principal
from core.pipelines.repository import PipelineRepository
from core.rag.store import RagRepository
from core.runs import RunRepository, key_from_idempotency, workflow_id
from evals.contracts import MetricSpec
from evals.repository import DatasetRepository, EvalRunRepository
from evals.runner import compare
from evals.targets import (
    RUN_KIND,
    SCHEDULE_PREFIX,
    WORKFLOW_NAME,
    EvalRunInput,
    KnowledgeBaseTarget,
    ModelTarget,
    PipelineTarget,
    Target,
    TemplateError,
    check_templates,
)

router = APIRouter(tags=["evals"])

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
_SLUG = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
RUN_TIMEOUT = dt.timedelta(days=7)


class EvalRunRequest(StrictModel):
    """Evaluate a target on a dataset version with metrics; optionally against a baseline run."""

    dataset_id: str = Field(min_length=1, max_length=64)
    dataset_version: int | None = Field(None, ge=1, description="Pinned version; the latest when omitted.")
    target: Target
    metrics: list[MetricSpec] = Field(min_length=1, max_length=20)
    primary_metric: str | None = Field(None, description="Metric of regression / A-B tests (default: first).")
    baseline_run_id: str | None = Field(None, max_length=300)
    budget_usd: float | None = Field(None, gt=0, le=100_000)
    batch_size: int | None = Field(None, gt=0, le=500)
    batch_concurrency: int | None = Field(None, gt=0, le=64)
    judge_model: str | None = Field(None, max_length=200)
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the regression test.")
    min_drop: float = Field(0.0, ge=0, description="Smallest mean drop that counts as a regression.")
    alert_channels: list[str] | None = Field(
        None, max_length=10, description="Notification channels told of a regression (default: settings)."
    )

    @model_validator(mode="after")
    def _primary(self) -> EvalRunRequest:
        names = [m.name for m in self.metrics]
        if self.primary_metric is not None and self.primary_metric not in names:
            raise ValueError("primary_metric must be one of the metrics")
        return self


class EvalRunOut(BaseModel):
    """An eval run: its configuration, status, aggregates (with CIs), regression and cost."""

    id: str
    status: str
    dataset_id: str
    dataset_version: int
    target: dict[str, Any]
    metrics: list[Any]
    baseline_run_id: str | None
    schedule_id: str | None
    budget_usd: float | None
    case_count: int
    evaluated: int = 0
    aggregates: dict[str, Any] | None
    regression: dict[str, Any] | None
    cost_usd: float
    created_by: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    events_url: str

    @classmethod
    def of(cls, row: EvalRun, evaluated: int = 0) -> EvalRunOut:
        return cls(
            id=row.id,
            status=row.status,
            dataset_id=row.dataset_id,
            dataset_version=row.dataset_version,
            target=row.target,
            metrics=row.metrics,
            baseline_run_id=row.baseline_run_id,
            schedule_id=row.schedule_id,
            budget_usd=float(row.budget_usd) if row.budget_usd is not None else None,
            case_count=row.case_count,
            evaluated=evaluated,
            aggregates=row.aggregates,
            regression=row.regression,
            cost_usd=float(row.cost_usd),
            created_by=row.created_by,
            created_at=row.created_at,
            finished_at=row.finished_at,
            events_url=f"/v1/runs/{row.id}/events",
        )


class EvalRunPage(BaseModel):
    data: list[EvalRunOut]
    next_cursor: str | None = None


class CaseResultOut(BaseModel):
    case_id: str
    scores: list[Any]
    primary_value: float | None
    passed: bool | None
    output_preview: str
    output_id: str | None
    error: str | None
    latency_ms: float
    cost_usd: float

    @classmethod
    def of(cls, row: EvalCaseResult) -> CaseResultOut:
        return cls(
            case_id=row.case_id,
            scores=row.scores,
            primary_value=row.primary_value,
            passed=row.passed,
            output_preview=row.output_preview,
            output_id=str(row.output_id) if row.output_id else None,
            error=row.error,
            latency_ms=row.latency_ms,
            cost_usd=float(row.cost_usd),
        )


class CaseResultPage(BaseModel):
    data: list[CaseResultOut]
    next_cursor: str | None = None


class CompareRequest(StrictModel):
    """Compare two runs case by case (A/B: same dataset, two targets)."""

    run_a: str = Field(min_length=1, max_length=300)
    run_b: str = Field(min_length=1, max_length=300)
    metric: str | None = Field(None, description="Metric to compare (default: run A's primary).")
    method: Literal["wilcoxon", "bootstrap"] = "wilcoxon"


def _validate_metrics(metrics: list[MetricSpec]) -> None:
    from evals.metrics import MetricSpecError, validate_specs

    try:
        validate_specs(metrics)
    except MetricSpecError as exc:
        raise ValidationFailed(f"invalid metrics: {exc}") from None


async def build_input(
    session: AsyncSession,
    state: AppState,
    principal: Principal,
    body: EvalRunRequest,
    schedule_id: str | None = None,
) -> EvalRunInput:
    """Validate a run request (models, dataset, baseline, channels) and pin versions."""
    tenant = principal.tenant_id
    _validate_metrics(body.metrics)
    try:
        check_templates(body.target)
    except TemplateError as exc:
        raise ValidationFailed(str(exc)) from None
    catalog = state.gateway.catalog if state.gateway else None
    target = body.target
    models = (
        [target.model]
        if isinstance(target, ModelTarget | KnowledgeBaseTarget)
        else list(getattr(target, "models", None) or [])
    )
    for name in [*models, *([body.judge_model] if body.judge_model else [])]:
        if catalog is None or not principal.allows_scope(f"models:{name}"):
            raise NotFound(f"model {name!r} does not exist or is not available to this key")
        catalog.get(name)
    if isinstance(target, KnowledgeBaseTarget):  # another tenant's knowledge base is not found
        await RagRepository.from_session(session).get_kb(tenant, target.knowledge_base_id)
    if isinstance(target, PipelineTarget):
        version = await PipelineRepository.from_session(session).version(
            tenant, target.pipeline_id, target.version
        )
        target = target.model_copy(update={"version": version.version})
    dataset = await DatasetRepository.from_session(session).version(
        tenant, body.dataset_id, body.dataset_version
    )
    if body.baseline_run_id is not None:
        await EvalRunRepository.from_session(session).get(tenant, body.baseline_run_id)
    settings = state.settings
    channels = body.alert_channels if body.alert_channels is not None else settings.evals.alert_channels
    unknown = [c for c in channels if c not in settings.approvals.channels]
    if unknown:
        raise ValidationFailed(f"unknown notification channel(s): {', '.join(sorted(unknown))}")
    return EvalRunInput(
        tenant_id=tenant,
        dataset_id=body.dataset_id,
        dataset_version=dataset.version,
        target=target,
        metrics=body.metrics,
        primary_metric=body.primary_metric,
        baseline_run_id=body.baseline_run_id,
        budget_usd=body.budget_usd,
        batch_size=body.batch_size or settings.evals.batch_size,
        batch_concurrency=body.batch_concurrency or settings.evals.batch_concurrency,
        case_concurrency=settings.evals.case_concurrency,
        judge_model=body.judge_model,
        alpha=body.alpha,
        min_drop=body.min_drop,
        alert_channels=channels,
        schedule_id=schedule_id,
        created_by=principal.actor,
    )


@router.post("/evals/runs", response_model=EvalRunOut, status_code=202)
async def start_eval_run(
    body: EvalRunRequest,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> EvalRunOut:
    """Start an eval run (202). The same ``Idempotency-Key`` returns the same run."""
    principal.require(Permission.runs_write)
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ValidationFailed("Idempotency-Key must be 1-200 printable ASCII characters")
    tenant = principal.tenant_id
    evals = EvalRunRepository.from_session(session)
    if idempotency_key is not None:
        existing = await RunRepository.from_session(session).by_idempotency_key(
            tenant, RUN_KIND, idempotency_key
        )
        if existing is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return EvalRunOut.of(await evals.get(tenant, existing.workflow_id))
    inp = await build_input(session, state, principal, body)
    run_key = key_from_idempotency(idempotency_key) if idempotency_key else uuid.uuid4().hex
    wid = workflow_id(RUN_KIND, tenant, run_key)
    # Committed before the start, so the workflow's first steps find both rows.
    async with state.sessions() as early, early.begin():
        run, created = await RunRepository.from_session(early).create(
            tenant_id=tenant,
            workflow_id=wid,
            kind=RUN_KIND,
            created_by=principal.actor,
            idempotency_key=idempotency_key,
            input_summary={
                "dataset": inp.dataset_id,
                "version": inp.dataset_version,
                "target": inp.target.kind,
                "baseline": inp.baseline_run_id,
            },
        )
        if created:
            case_count = (
                await DatasetRepository.from_session(early).version(
                    tenant, inp.dataset_id, inp.dataset_version
                )
            ).case_count
            await EvalRunRepository.from_session(early).record(
                run_id=wid,
                tenant_id=tenant,
                dataset_id=inp.dataset_id,
                dataset_version=inp.dataset_version,
                target=inp.target.model_dump(mode="json"),
                metrics=[m.model_dump(mode="json") for m in inp.metrics],
                baseline_run_id=inp.baseline_run_id,
                schedule_id=None,
                budget_usd=inp.budget_usd,
                case_count=case_count,
                created_by=principal.actor,
            )
    if not created:  # a concurrent double submit inserted it first
        response.headers["Idempotent-Replayed"] = "true"
        return EvalRunOut.of(await evals.get(tenant, run.workflow_id))
    try:
        handle = await start_once(
            temporal,
            WORKFLOW_NAME,
            inp,
            workflow_id=wid,
            kind=RUN_KIND,
            principal=principal,
            task_queue=state.settings.temporal.task_queue,
            execution_timeout=RUN_TIMEOUT,
        )
    except Exception:
        async with state.sessions() as late, late.begin():
            await RunRepository.from_session(late).set_status(tenant, wid, RunStatus.failed)
            await EvalRunRepository.from_session(late).update(tenant, wid, status="failed")
        raise
    await RunRepository.from_session(session).set_run_id(tenant, wid, handle.result_run_id)
    await append(
        session,
        actor=principal.actor,
        action="eval.start",
        tenant_id=tenant,
        target=wid,
        data={"dataset": inp.dataset_id, "version": inp.dataset_version, "target": inp.target.kind},
    )
    return EvalRunOut.of(await evals.get(tenant, wid))


@router.get("/evals/runs", response_model=EvalRunPage)
async def list_eval_runs(
    session: SessionDep,
    principal: PrincipalDep,
    dataset_id: str | None = None,
    schedule_id: str | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> EvalRunPage:
    """The tenant's eval runs, newest first (filter by dataset or schedule)."""
    principal.require(Permission.runs_read)
    after = decode_cursor(cursor)
    key = (str(after[0]), str(after[1])) if after and len(after) == 2 else None
    rows = await EvalRunRepository.from_session(session).page(
        principal.tenant_id, limit=limit + 1, after=key, dataset_id=dataset_id, schedule_id=schedule_id
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id])
    return EvalRunPage(data=[EvalRunOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/evals/runs/{run_id}", response_model=EvalRunOut)
async def get_eval_run(run_id: str, session: SessionDep, principal: PrincipalDep) -> EvalRunOut:
    """One run: status, aggregates with bootstrap CIs, regression verdict, cost, progress."""
    principal.require(Permission.runs_read)
    repo = EvalRunRepository.from_session(session)
    row = await repo.get(principal.tenant_id, run_id)
    evaluated, _ = await repo.counts(principal.tenant_id, run_id)
    return EvalRunOut.of(row, evaluated)


@router.get("/evals/runs/{run_id}/results", response_model=CaseResultPage)
async def list_results(
    run_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> CaseResultPage:
    """Per-case scores and outputs (preview; the full output via ``output_id``), in dataset order."""
    principal.require(Permission.runs_read)
    repo = EvalRunRepository.from_session(session)
    await repo.get(principal.tenant_id, run_id)
    after = decode_cursor(cursor)
    position = int(after[0]) if after and isinstance(after[0], int) else -1
    rows = await repo.result_page(principal.tenant_id, run_id, limit=limit + 1, after=position)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].position])
    return CaseResultPage(data=[CaseResultOut.of(r) for r in rows], next_cursor=next_cursor)


async def _compare(
    session: AsyncSession, principal: Principal, run_a: str, run_b: str, metric: str | None, method: str
) -> dict[str, Any]:
    repo = EvalRunRepository.from_session(session)
    tenant = principal.tenant_id
    a = await repo.get(tenant, run_a)
    await repo.get(tenant, run_b)
    name = metric or ((a.aggregates or {}).get("primary_metric")) or a.metrics[0]["name"]
    out = compare(
        await repo.all_results(tenant, run_a), await repo.all_results(tenant, run_b), name, method=method
    )
    return {"run_a": run_a, "run_b": run_b, **out}


@router.get("/evals/runs/{run_a}/compare/{run_b}")
async def compare_runs(
    run_a: str,
    run_b: str,
    session: SessionDep,
    principal: PrincipalDep,
    metric: str | None = None,
    method: Literal["wilcoxon", "bootstrap"] = "wilcoxon",
) -> dict[str, Any]:
    """Case-by-case diffs (b - a), a paired test on scores and McNemar on pass/fail."""
    principal.require(Permission.runs_read)
    return await _compare(session, principal, run_a, run_b, metric, method)


@router.post("/evals/compare")
async def compare_post(body: CompareRequest, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    """The same comparison as ``GET /v1/evals/runs/{a}/compare/{b}``, as a request body."""
    principal.require(Permission.runs_read)
    return await _compare(session, principal, body.run_a, body.run_b, body.metric, body.method)


# --- schedules -------------------------------------------------------------------------------


class ScheduleRequest(StrictModel):
    """A scheduled eval: a run configuration plus when to run it (cron or interval)."""

    id: str = Field(pattern=_SLUG)
    run: EvalRunRequest
    cron: str | None = Field(None, max_length=200, description="Cron expression (UTC), e.g. '0 3 * * *'.")
    interval_s: int | None = Field(None, ge=1, le=366 * 86_400, description="Run every N seconds.")
    overlap: Literal["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"] = (
        "skip"
    )
    catchup_window_s: int = Field(3600, ge=10, le=366 * 86_400)
    paused: bool = False
    note: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _when(self) -> ScheduleRequest:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError("give exactly one of cron or interval_s")
        return self


class ScheduleOut(BaseModel):
    id: str
    schedule_id: str
    paused: bool
    note: str
    cron: list[str]
    interval_s: list[float]
    overlap: str
    catchup_window_s: float
    next_action_times: list[dt.datetime]
    recent_runs: list[dict[str, Any]]
    num_actions: int


_OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}


def schedule_id_of(tenant_id: str, sid: str) -> str:
    """The Temporal Schedule id of a tenant's eval schedule."""
    return f"{SCHEDULE_PREFIX}:{tenant_id}:{sid}"


def build_schedule(
    inp: EvalRunInput, body: ScheduleRequest, principal: Principal, task_queue: str
) -> Schedule:
    """The Temporal Schedule that starts ``EvalRun`` (workflow ids ``eval:{tenant}:sched-{id}-<time>``)."""
    if body.cron is not None:
        spec = ScheduleSpec(cron_expressions=[body.cron])
    else:
        assert body.interval_s is not None
        spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=dt.timedelta(seconds=body.interval_s))])
    return Schedule(
        action=ScheduleActionStartWorkflow(
            WORKFLOW_NAME,
            inp,
            id=workflow_id(RUN_KIND, principal.tenant_id, f"sched-{body.id}"),
            task_queue=task_queue,
            execution_timeout=RUN_TIMEOUT,
            typed_search_attributes=run_search_attributes(principal, RUN_KIND),
        ),
        spec=spec,
        policy=SchedulePolicy(
            overlap=_OVERLAP[body.overlap], catchup_window=dt.timedelta(seconds=body.catchup_window_s)
        ),
        state=ScheduleState(paused=body.paused, note=body.note or f"eval schedule {body.id}"),
    )


async def _describe(handle: ScheduleHandle, sid: str) -> ScheduleOut:
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise NotFound("schedule not found") from None
        raise
    spec, policy, info = desc.schedule.spec, desc.schedule.policy, desc.info
    overlap = next((k for k, v in _OVERLAP.items() if v == policy.overlap), str(policy.overlap))
    return ScheduleOut(
        id=sid,
        schedule_id=desc.id,
        paused=desc.schedule.state.paused,
        note=desc.schedule.state.note or "",
        cron=list(spec.cron_expressions),
        interval_s=[i.every.total_seconds() for i in spec.intervals],
        overlap=overlap,
        catchup_window_s=policy.catchup_window.total_seconds() if policy.catchup_window else 0.0,
        next_action_times=list(info.next_action_times),
        recent_runs=[
            {
                "workflow_id": getattr(a.action, "workflow_id", None),
                "scheduled_at": a.scheduled_at,
                "started_at": a.started_at,
            }
            for a in info.recent_actions
        ],
        num_actions=info.num_actions,
    )


def _handle(temporal: Client, principal: Principal, sid: str) -> ScheduleHandle:
    if not re.match(_SLUG, sid):
        raise NotFound("schedule not found")
    return temporal.get_schedule_handle(schedule_id_of(principal.tenant_id, sid))


@router.post("/evals/schedules", response_model=ScheduleOut, status_code=201)
async def create_schedule(
    body: ScheduleRequest,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
) -> ScheduleOut:
    """Create a scheduled eval (a Temporal Schedule; cron or interval, overlap policy, catch-up)."""
    principal.require(Permission.runs_write)
    inp = await build_input(session, state, principal, body.run, schedule_id=body.id)
    sid = schedule_id_of(principal.tenant_id, body.id)
    schedule = build_schedule(inp, body, principal, state.settings.temporal.task_queue)
    try:
        handle = await temporal.create_schedule(
            sid,
            schedule,
            search_attributes=TypedSearchAttributes([SearchAttributePair(SA_TENANT_ID, principal.tenant_id)]),
        )
    except Exception as exc:
        if "already" in str(exc).lower():
            raise Conflict(f"schedule {body.id!r} already exists") from None
        raise
    await append(
        session,
        actor=principal.actor,
        action="eval.schedule.create",
        tenant_id=principal.tenant_id,
        target=sid,
        data={"cron": body.cron, "interval_s": body.interval_s, "dataset": inp.dataset_id},
    )
    return await _describe(handle, body.id)


@router.get("/evals/schedules", response_model=list[ScheduleOut])
async def list_schedules(principal: PrincipalDep, temporal: TemporalDep) -> list[ScheduleOut]:
    """The tenant's eval schedules."""
    principal.require(Permission.runs_read)
    prefix = schedule_id_of(principal.tenant_id, "")
    out = []
    async for entry in await temporal.list_schedules():
        if entry.id.startswith(prefix):
            sid = entry.id[len(prefix) :]
            out.append(await _describe(temporal.get_schedule_handle(entry.id), sid))
    return sorted(out, key=lambda s: s.id)


@router.get("/evals/schedules/{sid}", response_model=ScheduleOut)
async def get_schedule(sid: str, principal: PrincipalDep, temporal: TemporalDep) -> ScheduleOut:
    """One schedule with its next fire times and recent runs."""
    principal.require(Permission.runs_read)
    return await _describe(_handle(temporal, principal, sid), sid)


@router.post("/evals/schedules/{sid}/pause", response_model=ScheduleOut)
async def pause_schedule(
    sid: str, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> ScheduleOut:
    """Pause a schedule (no runs start until it is unpaused)."""
    principal.require(Permission.runs_write)
    handle = _handle(temporal, principal, sid)
    await _describe(handle, sid)
    await handle.pause(note=f"paused by {principal.actor}")
    await append(
        session,
        actor=principal.actor,
        action="eval.schedule.pause",
        tenant_id=principal.tenant_id,
        target=handle.id,
    )
    return await _describe(handle, sid)


@router.post("/evals/schedules/{sid}/unpause", response_model=ScheduleOut)
async def unpause_schedule(
    sid: str, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> ScheduleOut:
    """Resume a paused schedule."""
    principal.require(Permission.runs_write)
    handle = _handle(temporal, principal, sid)
    await _describe(handle, sid)
    await handle.unpause(note=f"unpaused by {principal.actor}")
    await append(
        session,
        actor=principal.actor,
        action="eval.schedule.unpause",
        tenant_id=principal.tenant_id,
        target=handle.id,
    )
    return await _describe(handle, sid)


@router.delete("/evals/schedules/{sid}", status_code=204)
async def delete_schedule(
    sid: str, session: SessionDep, principal: PrincipalDep, temporal: TemporalDep
) -> Response:
    """Delete a schedule (runs it already started are not affected)."""
    principal.require(Permission.runs_write)
    handle = _handle(temporal, principal, sid)
    await _describe(handle, sid)
    await handle.delete()
    await append(
        session,
        actor=principal.actor,
        action="eval.schedule.delete",
        tenant_id=principal.tenant_id,
        target=handle.id,
    )
    return Response(status_code=204)
