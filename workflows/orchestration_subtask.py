"""One subtask of the ``Orchestration`` workflow: route, reserve, fan out, agree.

A base class of :class:`workflows.orchestrate.OrchestrationWorkflow` holding the run state the
steps share (event seq, budget ledger, catalog snapshot, answers so far). Deterministic only.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.llm import LlmActivities
    from activities.orchestration import OrchestrationActivities
    from activities.runs import RunActivities
    from core.contracts import PublishEventInput
    from core.orchestration.budget import BudgetLedger
    from core.orchestration.contracts import (
        CandidateRecord,
        OrchestrationInput,
        PayloadRef,
        Strategy,
        Subtask,
        SubtaskCapability,
        SubtaskResult,
        SubtaskStatus,
    )
    from core.orchestration.router import ModelInfo, Panel, RoutingError, choose_panel
    from core.orchestration.steps import (
        DEFAULT_EMBEDDING_MODEL,
        CallLlmInput,
        ConsensusInput,
        ConsensusResult,
        OrchestrationEvent,
        PreparedPrompt,
        PrepareSubtaskInput,
    )
    from workflows.orchestration_calls import (
        LLM_HEARTBEAT,
        LLM_RETRY,
        LLM_TIMEOUT,
        WRITE_RETRY,
        WRITE_TIMEOUT,
        estimate,
        failed_candidate,
        pick_one,
        short_reason,
        skipped,
    )

Ev = OrchestrationEvent


class SubtaskSteps:
    """Run state and the per-subtask steps (see the workflow's docstring for the events)."""

    def __init__(self) -> None:
        self._seq = 0
        self._ledger = BudgetLedger(budget_usd=Decimal(0))
        self._models: list[ModelInfo] = []
        self._answers: dict[str, PayloadRef] = {}

    @property
    def _wid(self) -> str:
        return workflow.info().workflow_id

    async def _event(self, inp: OrchestrationInput, type: str, data: dict[str, Any]) -> None:
        # The seq is taken before the await so concurrent events get distinct, replay-stable numbers.
        self._seq += 1
        await workflow.execute_activity_method(
            RunActivities.publish_run_event,
            PublishEventInput(
                tenant_id=inp.tenant_id, workflow_id=self._wid, seq=self._seq, type=type, data=data
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )

    async def _subtask(self, inp: OrchestrationInput, subtask: Subtask) -> SubtaskResult:
        """Route the subtask, reserve before the fan-out, reach consensus; never raises for a
        failed proposer or an unroutable subtask (those are results, not run failures)."""
        sid = subtask.id
        await self._event(inp, Ev.subtask_started, {"subtask_id": sid})
        prepared = await workflow.execute_activity_method(
            OrchestrationActivities.prepare_subtask,
            PrepareSubtaskInput(
                tenant_id=inp.tenant_id,
                workflow_id=self._wid,
                task=inp.task,
                subtask=subtask,
                dependency_answers={d: self._answers[d] for d in subtask.depends_on if d in self._answers},
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )
        try:
            panel = choose_panel(
                self._models,
                subtask.capability,
                inp.panel,
                regions=inp.regions,
                remaining_budget_usd=self._ledger.remaining,
                prompt_tokens=prepared.prompt_tokens,
                completion_tokens=inp.max_tokens,
                fixed=inp.models,
            )
        except RoutingError as err:
            return await self._finished(
                inp, SubtaskResult(subtask_id=sid, status=SubtaskStatus.failed), str(err)
            )
        first = panel.models[:2] if inp.strategy is Strategy.adaptive else panel.models
        started = [m for m in first if self._reserve(inp, sid, m, prepared)]
        if not started:
            await self._event(inp, Ev.budget_exhausted, {"subtask_id": sid, "reason": panel.reason})
            return await self._finished(inp, skipped(sid, panel.reason), "budget exhausted")
        candidates = list(await asyncio.gather(*(self._propose(inp, sid, m, prepared) for m in started)))
        consensus, consensus_cost = await self._agree(inp, subtask, panel, prepared, candidates)
        record = consensus.record
        status = SubtaskStatus.completed if record.answer is not None else SubtaskStatus.failed
        if record.answer is not None:
            self._answers[sid] = record.answer
            if inp.human_review_below is not None and record.confidence < inp.human_review_below:
                status = SubtaskStatus.needs_review
                # TODO(approvals): open an approval request and wait for its decision signal.
                data = {"subtask_id": sid, "confidence": record.confidence, "todo": "approvals not built yet"}
                await self._event(inp, Ev.approval_requested, data)
        await self._event(
            inp,
            Ev.consensus_reached,
            {
                "subtask_id": sid,
                "strategy": record.strategy,
                "confidence": record.confidence,
                "winner_models": record.winner_models,
                "failed": record.failed,
                "answer_preview": record.answer.preview if record.answer else None,
                "reason": consensus.reason,
            },
        )
        cost = sum((c.cost_usd for c in candidates), Decimal(0)) + consensus_cost
        result = SubtaskResult(
            subtask_id=sid,
            status=status,
            panel=panel.models,
            candidates=candidates,
            consensus=record,
            cost_usd=cost,
        )
        return await self._finished(inp, result, record.error)

    async def _agree(
        self,
        inp: OrchestrationInput,
        subtask: Subtask,
        panel: Panel,
        prepared: PreparedPrompt,
        candidates: list[CandidateRecord],
    ) -> tuple[ConsensusResult, Decimal]:
        """Consensus rounds; adaptive adds one proposer per round while it is not confident and
        the next one is affordable. ``candidates`` grows in place. Returns the last round and
        what the consensus' own model calls (judge, aggregator, embeddings) cost."""
        sid = subtask.id
        by_id = {m.id: m for m in self._models}
        strategy, helper = self._reserve_helper(inp, sid, prepared, len(candidates))
        round_no, spent = 0, Decimal(0)
        while True:
            rest = [m for m in panel.models if m not in {c.model for c in candidates}]
            next_cost = estimate(by_id[rest[0]], prepared.prompt_tokens, inp.max_tokens) if rest else None
            consensus = await workflow.execute_activity_method(
                OrchestrationActivities.run_consensus,
                ConsensusInput(
                    tenant_id=inp.tenant_id,
                    workflow_id=self._wid,
                    subtask=subtask,
                    round=round_no,
                    strategy=strategy,
                    task=inp.task,
                    candidates=candidates,
                    weights={m.id: m.reliability for m in self._models}
                    if strategy is Strategy.weighted
                    else None,
                    target_confidence=inp.confidence_target,
                    max_models=min(inp.panel.max_models, len(panel.models)),
                    remaining_budget_usd=self._ledger.remaining,
                    next_model_cost_usd=next_cost,
                    judge_model=helper if strategy in (Strategy.judge, Strategy.moa) else None,
                    embedding_model=helper if strategy is Strategy.semantic else None,
                    max_tokens=inp.max_tokens,
                ),
                start_to_close_timeout=LLM_TIMEOUT,
                heartbeat_timeout=LLM_HEARTBEAT,
                retry_policy=LLM_RETRY,
            )
            spent += consensus.cost_usd
            if consensus.stop or not rest or not self._reserve(inp, sid, rest[0], prepared):
                break
            candidates.append(await self._propose(inp, sid, rest[0], prepared))
            round_no += 1
        if helper is not None:
            self._ledger.settle(f"{sid}:consensus", spent, model=helper)
        return consensus, spent

    def _reserve_helper(
        self, inp: OrchestrationInput, sid: str, prepared: PreparedPrompt, n: int
    ) -> tuple[Strategy, str | None]:
        """Reserve the consensus' own call (judge/aggregator, or embeddings for semantic); when it
        does not fit, degrade to a plain majority vote (no model call)."""
        if inp.strategy is Strategy.semantic:
            wanted = inp.embedding_model or DEFAULT_EMBEDDING_MODEL
            model = next((m for m in self._models if m.id == wanted), None)
            cost = estimate(model, n * inp.max_tokens, 0) if model else None
        elif inp.strategy in (Strategy.judge, Strategy.moa):
            prompt = prepared.prompt_tokens + n * inp.max_tokens
            model = pick_one(
                self._models,
                SubtaskCapability.reasoning,
                inp,
                self._ledger.remaining,
                prompt,
                inp.max_tokens,
                inp.judge_model,
            )
            cost = estimate(model, prompt, inp.max_tokens) if model else None
        else:
            return inp.strategy, None
        if model is None or cost is None or not self._ledger.reserve(f"{sid}:consensus", cost):
            return Strategy.majority, None
        return inp.strategy, model.id

    def _reserve(self, inp: OrchestrationInput, sid: str, model_id: str, prepared: PreparedPrompt) -> bool:
        model = next(m for m in self._models if m.id == model_id)
        return self._ledger.reserve(
            f"{sid}:{model_id}", estimate(model, prepared.prompt_tokens, inp.max_tokens)
        )

    async def _propose(
        self, inp: OrchestrationInput, sid: str, model: str, prepared: PreparedPrompt
    ) -> CandidateRecord:
        """One proposer call; after its retries a failure is a failed candidate, never dropped."""
        key = f"{sid}:{model}"
        try:
            call = await workflow.execute_activity_method(
                LlmActivities.call_llm,
                CallLlmInput(
                    tenant_id=inp.tenant_id,
                    workflow_id=self._wid,
                    call_key=f"{self._wid}:{key}",
                    model=model,
                    messages_ref=prepared.messages,
                    max_tokens=inp.max_tokens,
                ),
                start_to_close_timeout=LLM_TIMEOUT,
                heartbeat_timeout=LLM_HEARTBEAT,
                retry_policy=LLM_RETRY,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            self._ledger.release(key)
            return failed_candidate(model, short_reason(err))
        self._ledger.settle(key, call.cost_usd, model=call.model)
        return CandidateRecord(
            model=call.model,
            provider=call.provider,
            ok=True,
            answer=call.answer,
            usage=call.usage,
            cost_usd=call.cost_usd,
            latency_ms=call.latency_ms,
        )

    async def _finished(
        self, inp: OrchestrationInput, result: SubtaskResult, error: str | None
    ) -> SubtaskResult:
        data = {"subtask_id": result.subtask_id, "status": result.status, "cost_usd": str(result.cost_usd)}
        await self._event(inp, Ev.subtask_finished, {**data, "error": error} if error else data)
        return result
