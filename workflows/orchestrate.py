"""The ``Orchestration`` workflow (a NEXUS run): plan, route, propose, agree, synthesise.

Deterministic: every model call, database read and clock is an activity; the plan, the
catalog snapshot and every answer are in the history as claim-check references only.
A run has at most 12 subtasks (``Plan``'s bound) with at most 9 proposers each, so its
history stays bounded (a few hundred events) and it does not need continue-as-new.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.orchestration import OrchestrationActivities
    from activities.runs import RunActivities
    from core.contracts import FinishRunInput, PublishEventInput, RunStatus
    from core.orchestration.budget import BudgetLedger
    from core.orchestration.contracts import (
        RUN_KIND,
        OrchestrationInput,
        OrchestrationResult,
        Plan,
        RunOutcome,
        SubtaskCapability,
        SubtaskResult,
        SubtaskStatus,
    )
    from core.orchestration.router import ModelInfo
    from core.orchestration.steps import LoadModelsInput, PlanTaskInput, SynthesizeInput
    from workflows.orchestration_calls import (
        LLM_HEARTBEAT,
        LLM_RETRY,
        LLM_TIMEOUT,
        MAX_DELTA_EVENTS,
        PLANNER_COMPLETION_TOKENS,
        estimate,
        pick_one,
        short_reason,
        skipped,
        tokens_of,
    )
    from workflows.orchestration_subtask import INLINE_PATCH, Ev, SubtaskSteps


@workflow.defn(name="Orchestration")
class OrchestrationWorkflow(SubtaskSteps):
    """A NEXUS run. Events: ``run.started``, ``plan.ready``, per subtask ``subtask.started``,
    ``consensus.reached``, ``subtask.finished`` (and ``budget.exhausted``; below the review
    threshold ``approval.requested`` / ``approval.decided`` around an ``Approval`` child),
    ``synthesis.delta`` while the answer streams, then
    ``run.completed`` / ``run.failed`` / ``run.cancelled`` stored with the closed runs row.

    Budget: every call's pessimistic estimate is reserved in a :class:`BudgetLedger` before the
    call and settled with the actual cost after it, so spend never exceeds ``budget_usd``; when
    the budget is short panels degrade, then the run stops with ``budget_exhausted`` and the
    partial result (completed subtasks, answers joined without a synthesis call).
    """

    @workflow.run
    async def run(self, inp: OrchestrationInput) -> OrchestrationResult:
        self._ledger = BudgetLedger(budget_usd=inp.budget_usd)
        self._local_bookkeeping = workflow.patched("nexus-local-bookkeeping")
        # Newer runs: independent bookkeeping runs concurrently, short answers are voted here.
        self._inline = workflow.patched(INLINE_PATCH)
        try:
            started = self._event(
                inp, Ev.started, {"budget_usd": str(inp.budget_usd), "strategy": inp.strategy}
            )
            load = self._bookkeeping(
                OrchestrationActivities.load_models,
                LoadModelsInput(tenant_id=inp.tenant_id, allowed=inp.allowed_models),
            )
            if self._inline:
                snapshot = (await asyncio.gather(started, load))[1]
            else:
                await started
                snapshot = await load
            self._models = [ModelInfo.from_entry(m) for m in snapshot.models]
            plan, source = await self._plan(inp)
            ready = self._event(inp, Ev.plan_ready, {"source": source, "plan": plan.model_dump(mode="json")})
            pending = [ready] if self._inline else []  # published alongside the first layer
            if not self._inline:
                await ready
            results: dict[str, SubtaskResult] = {}
            exhausted = False
            for layer in plan.layers():
                if exhausted:
                    results.update({s.id: skipped(s.id, "budget exhausted") for s in layer})
                    continue
                done = await asyncio.gather(*pending, *(self._subtask(inp, s) for s in layer))
                pending = []
                for res in done[len(done) - len(layer) :]:
                    results[res.subtask_id] = res
                    exhausted = exhausted or res.status is SubtaskStatus.skipped
            result = await self._synthesize(inp, plan, [results[s.id] for s in plan.subtasks], exhausted)
            await self._finish(inp, RunStatus.completed, Ev.completed, self._summary(result), result=result)
            return result
        except BaseException as exc:
            if is_cancelled_exception(exc):
                await asyncio.shield(self._close(inp, RunStatus.cancelled, "cancelled"))
                raise
            if not isinstance(exc, ActivityError | ApplicationError):
                raise  # a bug in the workflow itself: fail the task so a fixed worker can resume
            reason = short_reason(exc)
            workflow.logger.warning("orchestration failed: %s", reason)
            await self._close(inp, RunStatus.failed, reason)
            raise ApplicationError(f"orchestration failed: {reason}", type="OrchestrationFailed") from exc

    # --- plan ---------------------------------------------------------------------------

    async def _plan(self, inp: OrchestrationInput) -> tuple[Plan, str]:
        if inp.plan is not None:
            return inp.plan, "supplied"
        prompt = tokens_of(inp.task)
        planner = None
        if not inp.skip_planning:
            planner = pick_one(
                self._models,
                SubtaskCapability.reasoning,
                inp,
                self._ledger.remaining / 2,
                prompt,
                PLANNER_COMPLETION_TOKENS,
                inp.planner_model,
            )
        reserved = planner is not None and self._ledger.reserve(
            "plan", 2 * estimate(planner, prompt, PLANNER_COMPLETION_TOKENS)
        )
        result = await workflow.execute_activity_method(
            OrchestrationActivities.plan_task,
            PlanTaskInput(
                tenant_id=inp.tenant_id,
                workflow_id=self._wid,
                task=inp.task,
                planner_model=planner.id if planner and reserved else None,
                max_tokens=PLANNER_COMPLETION_TOKENS,
                skip_planning=not reserved,
            ),
            start_to_close_timeout=LLM_TIMEOUT,
            heartbeat_timeout=LLM_HEARTBEAT,
            retry_policy=LLM_RETRY,
        )
        if reserved and planner is not None:  # both planner attempts use the same model
            self._ledger.settle("plan", sum((c.cost_usd for c in result.calls), Decimal(0)), model=planner.id)
        return result.plan, result.source

    # --- synthesis and closing -------------------------------------------------------------

    async def _synthesize(
        self, inp: OrchestrationInput, plan: Plan, subtasks: list[SubtaskResult], exhausted: bool
    ) -> OrchestrationResult:
        # A subtask rejected in human review keeps its consensus for the record, not as an answer.
        answered = {
            r.subtask_id: r
            for r in subtasks
            if r.consensus and r.consensus.answer and r.status is not SubtaskStatus.failed
        }
        models_by = {sid: r.consensus.winner_models for sid, r in answered.items() if r.consensus}
        synthesizer = None
        if answered and not exhausted and len(plan.subtasks) > 1:
            refs = [inp.task, *(self._answers[s] for s in answered)]
            prompt = tokens_of(*refs)
            model = pick_one(
                self._models,
                SubtaskCapability.writing,
                inp,
                self._ledger.remaining,
                prompt,
                inp.max_tokens,
                inp.synthesizer_model,
            )
            if model is not None and self._ledger.reserve(
                "synthesis", estimate(model, prompt, inp.max_tokens)
            ):
                synthesizer = model.id
            else:
                exhausted = True
                await self._event(inp, Ev.budget_exhausted, {"step": "synthesis"})
        answer, citations = None, []
        if answered:
            # synthesis.delta events take the seqs [delta_seq, delta_seq + max_deltas).
            delta_seq, max_deltas = self._seq + 1, MAX_DELTA_EVENTS if synthesizer else 0
            self._seq += max_deltas
            synth = await workflow.execute_activity_method(
                OrchestrationActivities.synthesize,
                SynthesizeInput(
                    tenant_id=inp.tenant_id,
                    workflow_id=self._wid,
                    task=inp.task,
                    plan=plan,
                    answers={sid: self._answers[sid] for sid in answered},
                    models_by_subtask=models_by,
                    model=synthesizer,
                    max_tokens=inp.max_tokens,
                    delta_seq=delta_seq,
                    max_deltas=max_deltas,
                ),
                start_to_close_timeout=LLM_TIMEOUT,
                heartbeat_timeout=LLM_HEARTBEAT,
                retry_policy=LLM_RETRY,
            )
            if synthesizer is not None:
                self._ledger.settle(
                    "synthesis", synth.call.cost_usd if synth.call else Decimal(0), model=synthesizer
                )
            answer, citations = synth.answer, synth.citations
        confidences = [r.consensus.confidence for r in answered.values() if r.consensus]
        outcome = RunOutcome.budget_exhausted if exhausted else RunOutcome.completed
        if not answered and not exhausted:
            outcome = RunOutcome.failed
        return OrchestrationResult(
            outcome=outcome,
            plan=plan,
            subtasks=subtasks,
            answer=answer,
            confidence=min(confidences) if confidences else 0.0,
            citations=citations,
            cost_usd=self._ledger.spent_usd,
            cost_by_model=dict(self._ledger.spent_by_model),
            budget_usd=inp.budget_usd,
        )

    @staticmethod
    def _summary(result: OrchestrationResult) -> dict[str, Any]:
        return {
            "outcome": result.outcome,
            "confidence": result.confidence,
            "cost_usd": str(result.cost_usd),
            "answer_preview": result.answer.preview if result.answer else None,
        }

    async def _finish(
        self,
        inp: OrchestrationInput,
        status: RunStatus,
        event: str,
        data: dict[str, Any],
        *,
        result: OrchestrationResult | None = None,
        error: str | None = None,
    ) -> None:
        """Close the runs row (with cost) and store its terminal event atomically."""
        self._seq += 1
        terminal = PublishEventInput(
            tenant_id=inp.tenant_id, workflow_id=self._wid, seq=self._seq, type=event, data=data
        )
        await self._bookkeeping(
            RunActivities.finish_run,
            FinishRunInput(
                tenant_id=inp.tenant_id,
                workflow_id=self._wid,
                kind=RUN_KIND,
                status=status,
                result=result.model_dump(mode="json") if result else None,
                error=error,
                cost_usd=float(self._ledger.spent_usd),
                created_by=inp.created_by,
                run_id=workflow.info().run_id,
                terminal_event=terminal,
            ),
        )

    async def _close(self, inp: OrchestrationInput, status: RunStatus, reason: str) -> None:
        event = Ev.cancelled if status is RunStatus.cancelled else Ev.failed
        await self._finish(inp, status, event, {"error": reason}, error=reason)
