"""One subtask of the ``Orchestration`` workflow: route, reserve, fan out, agree.

A base class of :class:`workflows.orchestrate.OrchestrationWorkflow`, built on
:class:`workflows.orchestration_consensus.ConsensusSteps` (proposer calls, consensus rounds) and
:class:`workflows.orchestration_review.ReviewSteps` (human review); the run state the steps share
(event seq, budget ledger, catalog snapshot, answers so far) lives in
:class:`workflows.orchestration_progress.RunSteps`. Deterministic only.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.orchestration import OrchestrationActivities
    from core.orchestration.contracts import (
        OrchestrationInput,
        Strategy,
        Subtask,
        SubtaskResult,
        SubtaskStatus,
    )
    from core.orchestration.progress import observations_of
    from core.orchestration.router import RoutingError, choose_panel
    from core.orchestration.steps import OrchestrationEvent, PreparedPrompt
    from workflows.orchestration_calls import skipped
    from workflows.orchestration_consensus import ConsensusSteps
    from workflows.orchestration_review import REVIEW_PATCH, ReviewSteps

Ev = OrchestrationEvent
# Runs started before this change leave a grounded subtask's query embeddings (billed in
# ``prepare_subtask``) out of the budget and the cost; newer ones settle them in the ledger as
# soon as the subtask is prepared, before any proposer of its layer is routed or reserved.
RETRIEVAL_COST_PATCH = "nexus-retrieval-cost"


class SubtaskSteps(ConsensusSteps, ReviewSteps):
    """The per-subtask steps (see the workflow's docstring for the events)."""

    async def _subtask(self, inp: OrchestrationInput, subtask: Subtask) -> SubtaskResult:
        """Announce and prepare the subtask, then :meth:`_run_subtask` (unbatched runs)."""
        announce = self._event(inp, Ev.subtask_started, {"subtask_id": subtask.id})
        if not self._inline:
            await announce
        prepare = self._bookkeeping(
            OrchestrationActivities.prepare_subtask, self._prepare_input(inp, subtask)
        )
        prepared = (await asyncio.gather(announce, prepare))[1] if self._inline else await prepare
        self._count_retrieval(subtask.id, prepared)
        return await self._run_subtask(inp, subtask, prepared)

    def _count_retrieval(self, sid: str, prepared: PreparedPrompt) -> None:
        """Settle what the subtask's retrieval already cost (its billed query embeddings) in the
        ledger, by embedding model; nothing on runs from before :data:`RETRIEVAL_COST_PATCH`."""
        if not self._retrieval_cost:
            return
        for model, cost in sorted(prepared.retrieval_cost_by_model.items()):
            self._ledger.settle(f"{sid}:retrieve:{model}", cost, model=model)

    def _retrieval_of(self, prepared: PreparedPrompt) -> Decimal:
        """The subtask's retrieval cost as counted in the run (zero on runs before the patch)."""
        return prepared.retrieval_cost_usd if self._retrieval_cost else Decimal(0)

    async def _run_subtask(
        self, inp: OrchestrationInput, subtask: Subtask, prepared: PreparedPrompt
    ) -> SubtaskResult:
        """Route the subtask, reserve before the fan-out, reach consensus; never raises for a
        failed proposer or an unroutable subtask (those are results, not run failures)."""
        sid = subtask.id
        retrieval = self._retrieval_of(prepared)
        spent: dict[str, Any] = {"cost_usd": retrieval, "retrieval_cost_usd": retrieval}
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
            failed = SubtaskResult(subtask_id=sid, status=SubtaskStatus.failed, **spent)
            return await self._finished(inp, failed, str(err))
        pool = self._pool(inp, panel, prepared)
        if pool is not None:  # the sequential scheme picks the first pair (usually)
            first = self._sequential_step(inp, [], pool, len(panel.models))[1]
        else:
            first = panel.models[:2] if inp.strategy is Strategy.adaptive else panel.models
        started = [m for m in first if self._reserve(inp, sid, m, prepared)]
        if not started:
            data: dict[str, Any] = {"subtask_id": sid, "reason": panel.reason}
            if self._batched:
                self._emit(inp, Ev.budget_exhausted, data)
            else:
                await self._event(inp, Ev.budget_exhausted, data)
            return await self._finished(
                inp, skipped(sid, panel.reason).model_copy(update=spent), "budget exhausted"
            )
        candidates = list(await asyncio.gather(*(self._propose(inp, sid, m, prepared) for m in started)))
        consensus, consensus_cost = await self._agree(inp, subtask, panel, prepared, candidates, pool)
        record = consensus.record
        status = SubtaskStatus.completed if record.answer is not None else SubtaskStatus.failed
        review = False
        if record.answer is not None:
            self._answers[sid] = record.answer
            review = inp.human_review_below is not None and record.confidence < inp.human_review_below
            if review and not workflow.patched(REVIEW_PATCH):
                review = False  # a run started before approvals: keep its recorded commands
                status = SubtaskStatus.needs_review
                # The pre-approvals placeholder, kept verbatim so those histories replay.
                data = {"subtask_id": sid, "confidence": record.confidence, "todo": "approvals not built yet"}
                await self._event(inp, Ev.approval_requested, data)
        reached_data: dict[str, Any] = {
            "subtask_id": sid,
            "strategy": record.strategy,
            "confidence": record.confidence,
            "winner_models": record.winner_models,
            "failed": record.failed,
            "answer_preview": record.answer.preview if record.answer else None,
            "reason": consensus.reason,
        }
        cost = sum((c.cost_usd for c in candidates), Decimal(0)) + consensus_cost + retrieval
        result = SubtaskResult(
            subtask_id=sid,
            status=status,
            panel=panel.models,
            candidates=candidates,
            consensus=record,
            cost_usd=cost,
            retrieval_cost_usd=retrieval,
        )
        if self._batched:
            self._emit(inp, Ev.consensus_reached, reached_data)
            if review:  # its approval.requested event writes the queue first
                result = await self._review(inp, subtask, result)
            if result.status is SubtaskStatus.completed and result.consensus is not None:
                self._observations += observations_of(sid, result.consensus, result.candidates)
            return await self._finished(inp, result, result.consensus.error if result.consensus else None)
        reached = self._event(inp, Ev.consensus_reached, reached_data)
        if self._inline and not review:  # both events at once; readers order them by seq
            error = record.error
            return (await asyncio.gather(reached, self._finished(inp, result, error)))[1]
        await reached
        if review:
            result = await self._review(inp, subtask, result)
        return await self._finished(inp, result, result.consensus.error if result.consensus else None)

    async def _finished(
        self, inp: OrchestrationInput, result: SubtaskResult, error: str | None
    ) -> SubtaskResult:
        data = {"subtask_id": result.subtask_id, "status": result.status, "cost_usd": str(result.cost_usd)}
        if not self._batched:
            await self._event(inp, Ev.subtask_finished, {**data, "error": error} if error else data)
            return result
        self._emit(inp, Ev.subtask_finished, {**data, "error": error} if error else data)
        # While others of the layer still run, write soon; the last one's events go with the
        # next layer's batch or ahead of the synthesis.
        self._layer_running -= 1
        if self._layer_running > 0:
            self._flush_soon(inp)
        return result
