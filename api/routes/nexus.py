"""``/v1/nexus/runs``: start a NEXUS orchestration run and read its plan, consensus and answer.

Cancel and follow a run through the generic ``/v1/runs/{id}/cancel`` and ``/v1/runs/{id}/events``
(kind ``nexus``). The task text goes to the payload store; the workflow gets a reference.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Response
from pydantic import Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowHandle

from api.deps import AppState, PrincipalDep, SessionDep, StateDep, TemporalDep
from api.routes.nexus_view import NexusRunOut, nexus_run_out
from api.routes.runs import refresh_status
from api.run_start import start_once
from api.schemas import StrictModel
from core import events
from core.db.models import Run
from core.errors import NotFound, ValidationFailed
from core.governance.audit import append
from core.identity import Permission, Principal
from core.orchestration.contracts import (
    RUN_KIND,
    WORKFLOW_NAME,
    OrchestrationInput,
    PanelPolicy,
    PayloadRef,
    Plan,
    Strategy,
)
from core.payloads import PayloadStore
from core.rag.grounding import parse_kb_ids
from core.rag.store import RagRepository
from core.runs import RunRepository, key_from_idempotency, workflow_id

router = APIRouter(tags=["nexus"])

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
MAX_TASK_CHARS = 100_000
RUN_TIMEOUT = dt.timedelta(hours=2)


class NexusRunRequest(StrictModel):
    """A task for NEXUS: decomposed (or given a plan), routed, verified by consensus, synthesised."""

    task: str = Field(min_length=1, max_length=MAX_TASK_CHARS, description="The task (stored, not echoed).")
    plan: Plan | None = Field(None, description="Your own plan; skips the planner.")
    skip_planning: bool = Field(False, description="Answer the task as one subtask.")
    strategy: Strategy = Strategy.adaptive
    models: list[str] | None = Field(
        None, min_length=1, max_length=9, description="Fixed panel (catalog ids)."
    )
    panel: PanelPolicy | None = None
    budget_usd: Decimal = Field(Decimal("1.00"), gt=0, le=Decimal(1000))
    confidence_target: float = Field(0.8, gt=0, le=1)
    regions: list[str] | None = Field(None, min_length=1, max_length=20)
    human_review_below: float | None = Field(None, ge=0, le=1)
    planner_model: str | None = None
    synthesizer_model: str | None = None
    judge_model: str | None = None
    embedding_model: str | None = None
    max_tokens: int = Field(512, gt=0, le=8192)
    knowledge_base_ids: list[str] = Field(
        default_factory=list,
        max_length=5,
        description="Your knowledge bases: retrieval and root subtasks are grounded on them, citing [K:<id>].",
    )

    @model_validator(mode="after")
    def _plan_or_skip(self) -> NexusRunRequest:
        if self.plan is not None and self.skip_planning:
            raise ValueError("give a plan or skip_planning, not both")
        return self

    def named_models(self) -> list[str]:
        helpers = [self.planner_model, self.synthesizer_model, self.judge_model, self.embedding_model]
        return list(dict.fromkeys([*(self.models or []), *(m for m in helpers if m)]))


def _check_models(state: AppState, principal: Principal, body: NexusRunRequest) -> None:
    """Named models must exist and be allowed to the key (else 404, as the gateway answers)."""
    catalog = state.gateway.catalog if state.gateway else None
    for name in body.named_models():
        if catalog is None or not principal.allows_scope(f"models:{name}"):
            raise NotFound(f"model {name!r} does not exist or is not available to this key")
        entry = catalog.get(name)
        if body.regions is not None and entry.regions and not set(entry.regions) & set(body.regions):
            raise ValidationFailed(f"model {name!r} does not serve the allowed regions")


async def _check_knowledge_bases(session: AsyncSession, principal: Principal, ids: list[str]) -> list[str]:
    """The tenant's knowledge bases by canonical id (another tenant's or unknown: 404)."""
    repo = RagRepository.from_session(session)
    return [str((await repo.get_kb(principal.tenant_id, kb_id)).id) for kb_id in parse_kb_ids(ids)]


def _allowed_models(state: AppState, principal: Principal) -> list[str] | None:
    if principal.scopes is None or state.gateway is None:
        return None
    return [m.id for m in state.gateway.catalog.visible_to(principal.scopes)]


def _url(wid: str) -> str:
    return f"/v1/runs/{quote(wid, safe='')}"


async def _view(session: AsyncSession, principal: Principal, run: Run) -> NexusRunOut:
    stored = await events.stored_events(session, tenant_id=principal.tenant_id, workflow_id=run.workflow_id)
    answer = None
    ref = (run.result or {}).get("answer")
    if ref:
        answer = await PayloadStore().get(session, principal.tenant_id, PayloadRef.model_validate(ref))
    return nexus_run_out(run, stored, answer, _url(run.workflow_id))


@router.post("/nexus/runs", response_model=NexusRunOut, status_code=202)
async def start_nexus_run(
    body: NexusRunRequest,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> NexusRunOut:
    """Start a run (202). The same ``Idempotency-Key`` (per tenant) returns the same run."""
    principal.require(Permission.runs_write)
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ValidationFailed("Idempotency-Key must be 1-200 printable ASCII characters")
    repo = RunRepository.from_session(session)
    tenant = principal.tenant_id
    if idempotency_key is not None:
        existing = await repo.by_idempotency_key(tenant, RUN_KIND, idempotency_key)
        if existing is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return await _view(session, principal, existing)
    _check_models(state, principal, body)
    body.knowledge_base_ids = await _check_knowledge_bases(session, principal, body.knowledge_base_ids)
    run_key = key_from_idempotency(idempotency_key) if idempotency_key else uuid.uuid4().hex
    wid = workflow_id(RUN_KIND, tenant, run_key)
    # Committed before the start, so the workflow's first activity can read it.
    async with state.sessions() as task_session, task_session.begin():
        task = await PayloadStore().put(task_session, tenant, body.task, idempotency_key=f"{wid}:task")
    summary = body.model_dump(mode="json", exclude={"task", "plan"}, exclude_none=True)
    run, created = await repo.create(
        tenant_id=tenant,
        workflow_id=wid,
        kind=RUN_KIND,
        created_by=principal.actor,
        idempotency_key=idempotency_key,
        input_summary={**summary, "task_preview": task.preview, "task_chars": len(body.task)},
    )
    if not created:  # a concurrent double submit inserted it first
        response.headers["Idempotent-Replayed"] = "true"
        return await _view(session, principal, run)
    inp = OrchestrationInput(
        tenant_id=tenant,
        created_by=principal.actor,
        task=task,
        **body.model_dump(exclude={"task", "panel"}, exclude_none=True),
        **({"panel": body.panel} if body.panel else {}),
        # A scoped key's run routes only over the models the key may use.
        allowed_models=_allowed_models(state, principal),
    )
    handle = await _start(temporal, wid, inp, principal, state.settings.temporal.task_queue)
    await repo.set_run_id(tenant, wid, handle.result_run_id)
    await append(
        session,
        actor=principal.actor,
        action="run.start",
        tenant_id=tenant,
        target=wid,
        data={"kind": RUN_KIND},
    )
    return await _view(session, principal, await repo.get(tenant, wid))


async def _start(
    temporal: Client, wid: str, inp: OrchestrationInput, principal: Principal, task_queue: str
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


@router.get("/nexus/runs/{run_id}", response_model=NexusRunOut)
async def get_nexus_run(
    run_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep, temporal: TemporalDep
) -> NexusRunOut:
    """A run's plan, per-subtask status, candidates (previews), votes, confidence, cost and answer."""
    principal.require(Permission.runs_read)
    repo = RunRepository.from_session(session)
    run = await repo.get(principal.tenant_id, run_id)
    if run.kind != RUN_KIND:
        raise NotFound("run not found")
    run = await refresh_status(repo, temporal, run)
    return await _view(session, principal, run)
