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
        Subtask,
        SubtaskCapability,
        SubtaskResult,
        SubtaskStatus,
    )
    from core.orchestration.layer import OpenLayerResult
    from core.orchestration.progress import CloseRun, closed_result, run_summary
    from core.orchestration.router import DEFAULT_RELIABILITY, ModelInfo
    from core.orchestration.steps import (
        LoadModelsInput,
        ModelsSnapshot,
        PlanTaskInput,
        SynthesizeInput,
    )
    from workflows.orchestration_calls import (
        LLM_HEARTBEAT,
        LLM_RETRY,
        LLM_TIMEOUT,
        MAX_DELTA_EVENTS,
        PLANNER_COMPLETION_TOKENS,
        WRITE_RETRY,
        WRITE_TIMEOUT,
        estimate,
        pick_one,
        short_reason,
        skipped,
        tokens_of,
    )
    from workflows.orchestration_consensus import INLINE_PATCH, SEQUENTIAL_PATCH
    from workflows.orchestration_progress import BATCH_PATCH
    from workflows.orchestration_subtask import RETRIEVAL_COST_PATCH, Ev, SubtaskSteps


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
        # Newer: adaptive uses the cost-aware sequential scheme; progress is written in batches.
        self._sequential = workflow.patched(SEQUENTIAL_PATCH)
        self._batched = workflow.patched(BATCH_PATCH)
        # Newer: a grounded subtask's query embeddings count in the budget and the cost.
        self._retrieval_cost = workflow.patched(RETRIEVAL_COST_PATCH)
        try:
            if self._batched:
                result = await self._run_batched(inp)
                if not self._closed:  # nothing was answered: no synthesis closed the run
                    summary = self._summary(result)
                    await self._finish(inp, RunStatus.completed, Ev.completed, summary, result=result)
                return result
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
            self._load(snapshot)
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

    def _load(self, snapshot: ModelsSnapshot) -> None:
        """The run's routing view of the catalog, with the tenant's measured reliabilities."""
        measured = snapshot.reliabilities
        self._models = [
            ModelInfo.from_entry(m, reliability=measured.get(m.id, DEFAULT_RELIABILITY))
            for m in snapshot.models
        ]

    async def _run_batched(self, inp: OrchestrationInput) -> OrchestrationResult:
        """The run with batched progress: one ``open_layer`` local activity per layer. With a
        supplied plan the first one writes ``run.started``, ``plan.ready`` and the layer's
        ``subtask.started``, loads the catalog and stores the layer's prompts, all at once."""
        self._emit(inp, Ev.started, {"budget_usd": str(inp.budget_usd), "strategy": inp.strategy})
        load = LoadModelsInput(tenant_id=inp.tenant_id, allowed=inp.allowed_models)
        layers: list[list[Subtask]] = []
        opened: OpenLayerResult | None = None
        if inp.plan is not None:
            plan, source = inp.plan, "supplied"
            self._emit(inp, Ev.plan_ready, {"source": source, "plan": plan.model_dump(mode="json")})
            layers = plan.layers()
            opened = await self._open_layer(inp, layers[0], load)
            snapshot = opened.snapshot
        else:
            snapshot = (await self._open_layer(inp, [], load)).snapshot
        assert snapshot is not None
        self._load(snapshot)
        if inp.plan is None:
            plan, source = await self._plan(inp)
            self._emit(inp, Ev.plan_ready, {"source": source, "plan": plan.model_dump(mode="json")})
            layers = plan.layers()
        results: dict[str, SubtaskResult] = {}
        exhausted = False
        for layer in layers:
            if exhausted:
                results.update({s.id: skipped(s.id, "budget exhausted") for s in layer})
                continue
            if opened is None:
                opened = await self._open_layer(inp, layer)
            for subtask, prepared in zip(layer, opened.prepared, strict=True):
                self._count_retrieval(subtask.id, prepared)  # before any of the layer is routed
            done = await asyncio.gather(
                *(self._run_subtask(inp, s, p) for s, p in zip(layer, opened.prepared, strict=True))
            )
            self._close_layer()
            opened = None
            for res in done:
                results[res.subtask_id] = res
                exhausted = exhausted or res.status is SubtaskStatus.skipped
        return await self._synthesize(inp, plan, [results[s.id] for s in plan.subtasks], exhausted)

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
                if self._batched:
                    self._emit(inp, Ev.budget_exhausted, {"step": "synthesis"})
                else:
                    await self._event(inp, Ev.budget_exhausted, {"step": "synthesis"})
        confidences = [r.consensus.confidence for r in answered.values() if r.consensus]
        outcome = RunOutcome.budget_exhausted if exhausted else RunOutcome.completed
        if not answered and not exhausted:
            outcome = RunOutcome.failed
        before = OrchestrationResult(
            outcome=outcome,
            plan=plan,
            subtasks=subtasks,
            confidence=min(confidences) if confidences else 0.0,
            cost_usd=self._ledger.spent_usd,
            cost_by_model=dict(self._ledger.spent_by_model),
            budget_usd=inp.budget_usd,
        )
        if not answered:
            return before
        # synthesis.delta events take the seqs [delta_seq, delta_seq + max_deltas).
        delta_seq, max_deltas = self._seq + 1, MAX_DELTA_EVENTS if synthesizer else 0
        self._seq += max_deltas
        close = None
        if self._batched:  # the activity also closes the run: no separate finish_run round
            self._seq += 1
            close = CloseRun(
                result=before,
                synthesizer=synthesizer,
                terminal_seq=self._seq,
                created_by=inp.created_by,
                run_id=workflow.info().run_id,
            )
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
                progress=self._unwritten(inp) if self._batched else None,
                close=close,
            ),
            start_to_close_timeout=LLM_TIMEOUT,
            heartbeat_timeout=LLM_HEARTBEAT,
            retry_policy=LLM_RETRY,
        )
        synthesis_cost = synth.call.cost_usd if synth.call else Decimal(0)
        if synthesizer is not None:
            self._ledger.settle("synthesis", synthesis_cost, model=synthesizer)
        if close is not None:
            self._closed = True
            return closed_result(before, synth.answer, synth.citations, synthesizer, synthesis_cost)
        update = {
            "answer": synth.answer,
            "citations": synth.citations,
            "cost_usd": self._ledger.spent_usd,
            "cost_by_model": dict(self._ledger.spent_by_model),
        }
        return before.model_copy(update=update)

    @staticmethod
    def _summary(result: OrchestrationResult) -> dict[str, Any]:
        return run_summary(result)

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
        finish = self._bookkeeping(
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
        if not self._batched:
            await finish
            return
        self._close_layer()
        unwritten = self._unwritten(inp)
        if unwritten:  # beside the close: followers order events by seq
            await asyncio.gather(
                finish,
                workflow.execute_local_activity_method(
                    OrchestrationActivities.record_progress,
                    unwritten,
                    start_to_close_timeout=WRITE_TIMEOUT,
                    retry_policy=WRITE_RETRY,
                ),
            )
        else:
            await finish

    async def _close(self, inp: OrchestrationInput, status: RunStatus, reason: str) -> None:
        if self._closed:  # the synthesis already closed the runs row and the event stream
            return
        event = Ev.cancelled if status is RunStatus.cancelled else Ev.failed
        await self._finish(inp, status, event, {"error": reason}, error=reason)
