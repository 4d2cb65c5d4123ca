"""One subtask of the ``Orchestration`` workflow: route, reserve, fan out, agree.

A base class of :class:`workflows.orchestrate.OrchestrationWorkflow`; the run state the steps
share (event seq, budget ledger, catalog snapshot, answers so far) lives in
:class:`workflows.orchestration_progress.RunSteps`. Deterministic only.
"""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.llm import LlmActivities
    from activities.orchestration import OrchestrationActivities
    from core.approvals.contracts import (
        WORKFLOW_NAME as APPROVAL_WORKFLOW,
    )
    from core.approvals.contracts import (
        ApprovalRequest,
        ApprovalResult,
        Decision,
        approval_workflow_id,
    )
    from core.consensus import (
        AdaptiveDecision,
        CandidateAnswer,
        Voter,
        adaptive_step,
        majority_vote,
        sequential_step,
    )
    from core.orchestration.contracts import (
        CandidateRecord,
        ConsensusRecord,
        OrchestrationInput,
        Strategy,
        Subtask,
        SubtaskCapability,
        SubtaskResult,
        SubtaskStatus,
    )
    from core.orchestration.progress import observations_of
    from core.orchestration.router import Panel, RoutingError, choose_panel
    from core.orchestration.steps import (
        DEFAULT_EMBEDDING_MODEL,
        CallLlmInput,
        ConsensusInput,
        ConsensusResult,
        OrchestrationEvent,
        PreparedPrompt,
    )
    from workflows.orchestration_calls import (
        LLM_HEARTBEAT,
        LLM_RETRY,
        LLM_TIMEOUT,
        estimate,
        failed_candidate,
        inline_text,
        pick_one,
        short_reason,
        skipped,
    )
    from workflows.orchestration_progress import RunSteps

Ev = OrchestrationEvent
# Runs that reached a low-confidence subtask before this change published a placeholder
# ``approval.requested`` event and went on; newer runs wait on an ``Approval`` child.
REVIEW_PATCH = "nexus-review-approval"
APPROVAL_DECIDED = "approval.decided"
# Runs started before this change vote in a ``run_consensus`` activity and publish their
# bookkeeping events one after another; newer runs vote on short answers in the workflow (pure
# code, no round trip) and publish independent events concurrently with the step beside them.
INLINE_PATCH = "nexus-inline-consensus"
# Strategies that need no model call: their vote is pure code over short texts.
INLINE_STRATEGIES = frozenset({Strategy.majority, Strategy.weighted, Strategy.adaptive})
# Runs started before this change run ``adaptive`` with the Beta rule over the panel order
# (``adaptive_step``); newer ones with the cost-aware sequential scheme over the tenant's
# measured reliabilities (``sequential_step``: whom to ask, one or a pair at a time).
SEQUENTIAL_PATCH = "nexus-sequential-consensus"
# Runs started before this change leave a grounded subtask's query embeddings (billed in
# ``prepare_subtask``) out of the budget and the cost; newer ones settle them in the ledger as
# soon as the subtask is prepared, before any proposer of its layer is routed or reserved.
RETRIEVAL_COST_PATCH = "nexus-retrieval-cost"
MAX_APPROVAL_ID = 100  # the approvals table's id column


def review_approval_id(workflow_id: str, subtask_id: str) -> str:
    """``{run key}-{subtask id}``: deterministic, at most 100 characters, no colons."""
    short = workflow_id.split(":", 2)[-1].replace(":", ".")
    approval_id = f"{short}-{subtask_id}"
    if len(approval_id) <= MAX_APPROVAL_ID:
        return approval_id
    digest = hashlib.sha256(short.encode()).hexdigest()[:16]
    return f"{short[:40]}.{digest}-{subtask_id}"


def review_context(subtask: Subtask, record: ConsensusRecord, candidates: list[CandidateRecord]) -> str:
    """What the reviewer sees: the instruction, the consensus answer and every candidate (previews)."""
    lines = [
        f"**Subtask `{subtask.id}`** ({subtask.capability.value}): consensus `{record.strategy}` "
        f"reached confidence {record.confidence:.2f}.",
        "",
        "### Instruction",
        "",
        subtask.instruction,
        "",
        "### Consensus answer" + (f" ({', '.join(record.winner_models)})" if record.winner_models else ""),
        "",
        record.answer.preview if record.answer else "_none_",
        "",
        "### Candidate answers",
        "",
    ]
    for c in candidates:
        text = c.answer.preview if c.ok and c.answer else f"_failed: {c.error or 'no answer'}_"
        lines.append(f"- `{c.model}`: {' '.join(text.split())}")
    return "\n".join(lines)


class SubtaskSteps(RunSteps):
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

    async def _review(
        self, inp: OrchestrationInput, subtask: Subtask, result: SubtaskResult
    ) -> SubtaskResult:
        """Wait on an ``Approval`` child: approve keeps the consensus answer, anything else (reject,
        changes requested, the due time passing) fails the subtask and drops its answer."""
        record = result.consensus
        assert record is not None
        sid = subtask.id
        approval_id = review_approval_id(self._wid, sid)
        request = ApprovalRequest(
            tenant_id=inp.tenant_id,
            approval_id=approval_id,
            title=f"Review NEXUS subtask {sid} (confidence {record.confidence:.2f})",
            context_markdown=review_context(subtask, record, result.candidates)[:100_000],
            assignees=inp.review_assignees,
            due_in_s=inp.review_due_in_s,
            on_timeout="reject",
            parent_workflow_id=self._wid,
            requested_by=inp.created_by,
        )
        handle = await workflow.start_child_workflow(
            APPROVAL_WORKFLOW,
            request,
            id=approval_workflow_id(inp.tenant_id, approval_id),
            result_type=ApprovalResult,
        )
        requested = {
            "subtask_id": sid,
            "confidence": record.confidence,
            "approval_id": approval_id,
            "approval_url": f"/v1/approvals/{quote(approval_id, safe='')}",
        }
        await self._event(inp, Ev.approval_requested, requested)
        decided: ApprovalResult | None = None
        try:
            decided = await handle
        except ChildWorkflowError as err:
            if is_cancelled_exception(err):
                raise
            note = f"human review failed: {short_reason(err)}"
        approved = decided is not None and decided.outcome is Decision.approve
        actor = decided.decision.actor if decided and decided.decision else None
        if decided is not None:
            verdict = "approved" if approved else (decided.outcome or decided.status).value
            note = f"human review: {verdict} by {actor or 'timeout'}"
        data: dict[str, Any] = {
            "subtask_id": sid,
            "approval_id": approval_id,
            "status": decided.status.value if decided else "failed",
            "outcome": decided.outcome.value if decided and decided.outcome else None,
            "actor": actor,
        }
        await self._event(inp, APPROVAL_DECIDED, data)
        reasons = f"{record.reasons} | {note}" if record.reasons else note
        if approved:
            update: dict[str, Any] = {"reasons": reasons}
            return result.model_copy(update={"consensus": record.model_copy(update=update)})
        self._answers.pop(sid, None)  # dependents and the synthesis never see a rejected answer
        failed = record.model_copy(update={"reasons": reasons, "error": note})
        return result.model_copy(update={"status": SubtaskStatus.failed, "consensus": failed})

    async def _agree(
        self,
        inp: OrchestrationInput,
        subtask: Subtask,
        panel: Panel,
        prepared: PreparedPrompt,
        candidates: list[CandidateRecord],
        pool: dict[str, Decimal] | None = None,
    ) -> tuple[ConsensusResult, Decimal]:
        """Consensus rounds; adaptive adds proposers while it is not confident and the next are
        affordable: one per round in panel order (Beta rule), or with ``pool`` (the sequential
        scheme) the one or two it picks. ``candidates`` grows in place. Returns the last round
        and what the consensus' own model calls (judge, aggregator, embeddings) cost."""
        sid = subtask.id
        by_id = {m.id: m for m in self._models}
        strategy, helper = self._reserve_helper(inp, sid, prepared, len(candidates))
        round_no, spent = 0, Decimal(0)
        while True:
            rest = [m for m in panel.models if m not in {c.model for c in candidates}]
            next_cost = estimate(by_id[rest[0]], prepared.prompt_tokens, inp.max_tokens) if rest else None
            max_models = min(inp.panel.max_models, len(panel.models))
            inline = self._vote_inline(inp, strategy, candidates, max_models, next_cost, pool)
            consensus = (
                inline
                if inline is not None
                else await workflow.execute_activity_method(
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
                        if strategy is Strategy.weighted or pool is not None
                        else None,
                        pool_costs=pool,
                        target_confidence=inp.confidence_target,
                        max_models=max_models,
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
            )
            spent += consensus.cost_usd
            if pool is not None:
                ask = (
                    []
                    if consensus.stop
                    else [m for m in consensus.ask if self._reserve(inp, sid, m, prepared)]
                )
                if not ask:
                    break
                candidates.extend(await asyncio.gather(*(self._propose(inp, sid, m, prepared) for m in ask)))
            else:
                if consensus.stop or not rest or not self._reserve(inp, sid, rest[0], prepared):
                    break
                candidates.append(await self._propose(inp, sid, rest[0], prepared))
            round_no += 1
        if helper is not None:
            self._ledger.settle(f"{sid}:consensus", spent, model=helper)
        return consensus, spent

    def _vote_inline(
        self,
        inp: OrchestrationInput,
        strategy: Strategy,
        candidates: list[CandidateRecord],
        max_models: int,
        next_cost: Decimal | None,
        pool: dict[str, Decimal] | None = None,
    ) -> ConsensusResult | None:
        """The vote of ``run_consensus`` computed here, when it needs no model call and every answer
        is short enough to travel whole in its preview; None otherwise (the activity votes).

        The same pure functions as the activity, on the same texts, so the outcome is the same;
        the consensus answer is the stored answer of a winning candidate (no new payload).
        """
        if not self._inline or strategy not in INLINE_STRATEGIES:
            return None
        cands: list[CandidateAnswer] = []
        for c in candidates:
            text = inline_text(c.answer) if c.ok else None
            if c.ok and text is None:
                return None
            cands.append(
                CandidateAnswer(
                    model=c.model,
                    text=text,
                    ok=c.ok,
                    error=c.error,
                    cost_usd=c.cost_usd,
                    latency_ms=c.latency_ms,
                )
            )
        stop, reason, ask = True, "", list[str]()
        if strategy is Strategy.adaptive and pool is not None:
            decision, ask = self._sequential_step(inp, cands, pool, max_models)
            outcome, stop, reason = decision.outcome, decision.stop, decision.reason
        elif strategy is Strategy.adaptive:
            decision = adaptive_step(
                cands,
                target_confidence=inp.confidence_target,
                max_models=max_models,
                remaining_budget_usd=self._ledger.remaining,
                next_model_cost_usd=next_cost or Decimal(0),
            )
            outcome, stop, reason = decision.outcome, decision.stop, decision.reason
        else:
            weights = {m.id: m.reliability for m in self._models} if strategy is Strategy.weighted else None
            outcome = majority_vote(cands, weights)
        answer = None
        if outcome.answer:
            winners = [c for c in candidates if c.model in outcome.winner_models and c.ok and c.answer]
            same = [c for c in winners if (inline_text(c.answer) or "").strip() == outcome.answer]
            answer = (same or winners)[0].answer
        record = ConsensusRecord(
            strategy=outcome.strategy,
            answer=answer,
            confidence=outcome.confidence,
            winner_models=outcome.winner_models,
            votes=outcome.votes,
            dissent=outcome.dissent,
            failed=outcome.failed,
            reasons=outcome.reasons,
            error=outcome.error,
        )
        return ConsensusResult(record=record, stop=stop, reason=reason, ask=ask)

    def _pool(
        self, inp: OrchestrationInput, panel: Panel, prepared: PreparedPrompt
    ) -> dict[str, Decimal] | None:
        """The sequential scheme's pool (panel order, each model's estimated call cost), or None
        when the run does not use it (another strategy, or a run from before the patch)."""
        if not (self._sequential and inp.strategy is Strategy.adaptive):
            return None
        by_id = {m.id: m for m in self._models}
        return {m: estimate(by_id[m], prepared.prompt_tokens, inp.max_tokens) for m in panel.models}

    def _sequential_step(
        self, inp: OrchestrationInput, cands: list[CandidateAnswer], pool: dict[str, Decimal], max_models: int
    ) -> tuple[AdaptiveDecision, list[str]]:
        """One decision of the cost-aware loop over the run's measured reliabilities."""
        reliability = {m.id: m.reliability for m in self._models}
        voters = [Voter(m, reliability[m], cost) for m, cost in pool.items()]
        return sequential_step(
            cands,
            voters,
            target_confidence=inp.confidence_target,
            max_models=min(inp.panel.max_models, max_models),
            remaining_budget_usd=self._ledger.remaining,
        )

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
