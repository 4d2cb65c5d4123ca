"""Proposers and consensus of one ``Orchestration`` subtask: reserve, call, vote, ask for more.

A base class of :class:`workflows.orchestration_subtask.SubtaskSteps`. Deterministic only.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.llm import LlmActivities
    from activities.orchestration import OrchestrationActivities
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
    )
    from core.orchestration.router import Panel
    from core.orchestration.steps import (
        DEFAULT_EMBEDDING_MODEL,
        CallLlmInput,
        ConsensusInput,
        ConsensusResult,
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
    )
    from workflows.orchestration_progress import RunSteps

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


class ConsensusSteps(RunSteps):
    """Proposer calls (each reserved in the ledger first) and the consensus rounds over them."""

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
