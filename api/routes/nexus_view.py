"""The shape of ``GET /v1/nexus/runs/{id}``: built from the closed run's result, or from its
progress events while it runs (plan, per-subtask status, consensus)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel

from core.db.models import Run
from core.events import Event
from core.orchestration.contracts import OrchestrationResult, Plan
from core.orchestration.steps import OrchestrationEvent


class CandidateOut(BaseModel):
    model: str
    ok: bool
    error: str | None = None
    preview: str | None = None
    cost_usd: str = "0"
    latency_ms: float = 0.0


class ConsensusOut(BaseModel):
    strategy: str
    confidence: float
    winner_models: list[str] = []
    votes: dict[str, list[str]] = {}
    dissent: list[str] = []
    failed: list[str] = []
    answer_preview: str | None = None
    reasons: str | None = None


class SubtaskOut(BaseModel):
    id: str
    instruction: str
    status: str
    panel: list[str] = []
    candidates: list[CandidateOut] = []
    consensus: ConsensusOut | None = None
    cost_usd: str = "0"
    retrieval_cost_usd: str = "0"  # knowledge-base query embeddings (included in cost_usd)


class NexusRunOut(BaseModel):
    """A NEXUS run: its plan, each subtask's candidates and consensus, cost and final answer."""

    id: str
    status: str
    outcome: str | None = None
    created_at: dt.datetime
    closed_at: dt.datetime | None
    budget_usd: str | None = None
    cost_usd: str
    cost_by_model: dict[str, str] = {}
    confidence: float | None = None
    plan: Plan | None = None
    subtasks: list[SubtaskOut] = []
    answer: str | None = None
    citations: list[dict[str, Any]] = []
    error: str | None = None
    events_url: str
    cancel_url: str


def _from_result(result: OrchestrationResult) -> list[SubtaskOut]:
    instructions = {s.id: s.instruction for s in result.plan.subtasks}
    out = []
    for sub in result.subtasks:
        c = sub.consensus
        out.append(
            SubtaskOut(
                id=sub.subtask_id,
                instruction=instructions.get(sub.subtask_id, ""),
                status=sub.status.value,
                panel=sub.panel,
                candidates=[
                    CandidateOut(
                        model=cand.model,
                        ok=cand.ok,
                        error=cand.error,
                        preview=cand.answer.preview if cand.answer else None,
                        cost_usd=str(cand.cost_usd),
                        latency_ms=cand.latency_ms,
                    )
                    for cand in sub.candidates
                ],
                consensus=ConsensusOut(
                    strategy=c.strategy,
                    confidence=c.confidence,
                    winner_models=c.winner_models,
                    votes=c.votes,
                    dissent=c.dissent,
                    failed=c.failed,
                    answer_preview=c.answer.preview if c.answer else None,
                    reasons=c.reasons,
                )
                if c
                else None,
                cost_usd=str(sub.cost_usd),
                retrieval_cost_usd=str(sub.retrieval_cost_usd),
            )
        )
    return out


def _from_events(events: list[Event]) -> tuple[Plan | None, list[SubtaskOut]]:
    plan: Plan | None = None
    subtasks: dict[str, SubtaskOut] = {}
    for event in events:
        data = event.data
        if event.type == OrchestrationEvent.plan_ready and "plan" in data:
            plan = Plan.model_validate(data["plan"])
            subtasks = {
                s.id: SubtaskOut(id=s.id, instruction=s.instruction, status="pending") for s in plan.subtasks
            }
            continue
        sub = subtasks.get(str(data.get("subtask_id")))
        if sub is None:
            continue
        if event.type == OrchestrationEvent.subtask_started:
            sub.status = "running"
        elif event.type == OrchestrationEvent.subtask_finished:
            sub.status = str(data.get("status", "completed"))
            sub.cost_usd = str(data.get("cost_usd", "0"))
        elif event.type == OrchestrationEvent.consensus_reached:
            sub.consensus = ConsensusOut(
                strategy=str(data.get("strategy", "")),
                confidence=float(data.get("confidence", 0.0)),
                winner_models=list(data.get("winner_models", [])),
                failed=list(data.get("failed", [])),
                answer_preview=data.get("answer_preview"),
            )
    return plan, list(subtasks.values())


def nexus_run_out(run: Run, events: list[Event], answer: str | None, base_url: str) -> NexusRunOut:
    """The API view of ``run`` (``answer`` is the final text read from the payload store)."""
    result = OrchestrationResult.model_validate(run.result) if run.result else None
    out = NexusRunOut(
        id=run.workflow_id,
        status=run.status,
        created_at=run.created_at,
        closed_at=run.closed_at,
        cost_usd=str(run.cost_usd),
        error=run.error,
        answer=answer,
        events_url=f"{base_url}/events",
        cancel_url=f"{base_url}/cancel",
        budget_usd=str(run.input_summary.get("budget_usd")) if run.input_summary.get("budget_usd") else None,
    )
    if result is None:
        out.plan, out.subtasks = _from_events(events)
        return out
    out.outcome = result.outcome.value
    out.plan = result.plan
    out.subtasks = _from_result(result)
    out.confidence = result.confidence
    out.cost_usd = str(result.cost_usd)
    out.cost_by_model = {k: str(v) for k, v in result.cost_by_model.items()}
    out.budget_usd = str(result.budget_usd)
    out.citations = [c.model_dump() for c in result.citations]
    return out
