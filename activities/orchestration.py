"""Orchestration activities: thin adapters between the ``Orchestration`` workflow and the pure
planner, consensus and synthesis modules. Texts are read from and written to the payload
store; every model call goes through :class:`~activities.llm.LlmActivities`' idempotent path
(one ``model_calls`` row per ``call_key``), so a retry never pays twice.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.llm import LlmActivities, bad_input
from activities.runs import require_own_workflow
from core import events
from core.consensus import (
    CandidateAnswer,
    ConsensusOutcome,
    adaptive_step,
    judge_messages,
    majority_vote,
    moa_messages,
    moa_outcome,
    parse_judge,
    semantic_consensus,
)
from core.orchestration.contracts import ConsensusRecord, PayloadRef, Strategy
from core.orchestration.planner import (
    PlanError,
    is_trivial,
    parse_plan,
    planner_messages,
    repair_messages,
    trivial_plan,
)
from core.orchestration.steps import (
    DEFAULT_EMBEDDING_MODEL,
    LLM_MAX_ATTEMPTS,
    CallLlmResult,
    ConsensusInput,
    ConsensusResult,
    LoadModelsInput,
    ModelsSnapshot,
    OrchestrationEvent,
    PlanTaskInput,
    PlanTaskResult,
    PreparedPrompt,
    PrepareSubtaskInput,
    SynthesizeInput,
    SynthesizeResult,
)
from core.orchestration.synthesis import (
    build_citations,
    label,
    single_subtask_answer,
    subtask_messages,
    synthesis_messages,
)
from core.providers import ChatRequest, Message
from core.providers.tokens import count_messages

DELTA_MIN_CHARS = 48
DELTA_MIN_INTERVAL_S = 0.2


def _messages(raw: list[dict[str, str]]) -> list[Message]:
    return [Message.model_validate(m) for m in raw]


class DeltaPublisher:
    """Coalesces streamed text into at most ``max_events`` ``synthesis.delta`` events, stored
    under the workflow-reserved seqs ``[first_seq, first_seq + max_events)`` (a retry lands on
    the same rows)."""

    def __init__(self, owner: OrchestrationActivities, inp: SynthesizeInput) -> None:
        self._owner = owner
        self._inp = inp
        self._next = inp.delta_seq
        self._buffer: list[str] = []
        self._last_flush = time.monotonic()

    async def __call__(self, text: str) -> None:
        self._buffer.append(text)
        last_seq = self._inp.delta_seq + self._inp.max_deltas - 1
        due = time.monotonic() - self._last_flush >= DELTA_MIN_INTERVAL_S
        if self._next < last_seq and (due or sum(map(len, self._buffer)) >= DELTA_MIN_CHARS):
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer or self._next >= self._inp.delta_seq + self._inp.max_deltas:
            return
        text, self._buffer = "".join(self._buffer), []
        self._last_flush = time.monotonic()
        llm = self._owner.llm
        async with llm.sessions() as session:
            await events.publish(
                session,
                llm.redis,
                tenant_id=self._inp.tenant_id,
                workflow_id=self._inp.workflow_id,
                type=OrchestrationEvent.synthesis_delta.value,
                data={"text": text},
                seq=self._next,
            )
        self._next += 1


class OrchestrationActivities:
    """``load_models``, ``plan_task``, ``prepare_subtask``, ``run_consensus``, ``synthesize``."""

    def __init__(self, llm: LlmActivities) -> None:
        self.llm = llm

    @property
    def _sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.llm.sessions

    async def _text(self, tenant_id: str, ref: PayloadRef) -> str:
        async with self._sessions() as session:
            return await self.llm.store.get(session, tenant_id, ref)

    @activity.defn(name="load_models")
    async def load_models(self, inp: LoadModelsInput) -> ModelsSnapshot:
        """The callable catalog models, recorded once in the history so routing replays identically."""
        models = self.llm.catalog.models
        if inp.allowed is not None:
            allowed = set(inp.allowed)
            models = [m for m in models if m.id in allowed]
        return ModelsSnapshot(models=models)

    @activity.defn(name="plan_task")
    async def plan_task(self, inp: PlanTaskInput) -> PlanTaskResult:
        """Plan the task with the planner model; repair once on invalid output, else one step."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        task = await self._text(inp.tenant_id, inp.task)
        if inp.skip_planning or is_trivial(task):
            return PlanTaskResult(plan=trivial_plan(task), source="trivial")
        if inp.planner_model is None:
            raise bad_input("planning needs a planner model")
        calls: list[CallLlmResult] = []
        error = ""
        prompt = _messages(planner_messages(task))
        for attempt in range(2):
            call = await self.llm.billed_chat(
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                call_key=f"{inp.workflow_id}:plan:{attempt}",
                request=ChatRequest(model=inp.planner_model, messages=prompt, max_tokens=inp.max_tokens),
            )
            calls.append(call)
            output = await self._text(inp.tenant_id, call.answer)
            try:
                plan = parse_plan(output)
            except PlanError as err:
                error = str(err)
                prompt = _messages(repair_messages(task, output, error))
                continue
            return PlanTaskResult(plan=plan, source="planner" if attempt == 0 else "repaired", calls=calls)
        return PlanTaskResult(plan=trivial_plan(task), source="fallback", calls=calls, error=error[:500])

    @activity.defn(name="prepare_subtask")
    async def prepare_subtask(self, inp: PrepareSubtaskInput) -> PreparedPrompt:
        """Store the proposer messages of one subtask (task + dependency answers) once."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        task = await self._text(inp.tenant_id, inp.task)
        deps = {sid: await self._text(inp.tenant_id, ref) for sid, ref in inp.dependency_answers.items()}
        messages = _messages(subtask_messages(task, inp.subtask, deps))
        raw = json.dumps([m.model_dump(exclude_none=True) for m in messages])
        async with self._sessions() as session, session.begin():
            ref = await self.llm.store.put(
                session,
                inp.tenant_id,
                raw,
                idempotency_key=f"{inp.workflow_id}:prompt:{inp.subtask.id}",
                content_type="application/json",
            )
        return PreparedPrompt(messages=ref, prompt_tokens=count_messages(messages))

    @activity.defn(name="run_consensus")
    async def run_consensus(self, inp: ConsensusInput) -> ConsensusResult:
        """Apply the run's strategy to the candidates; judge/moa/semantic call models idempotently."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        cands: list[CandidateAnswer] = []
        for c in inp.candidates:
            text = await self._text(inp.tenant_id, c.answer) if c.ok and c.answer else None
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
        key = f"{inp.workflow_id}:{inp.subtask.id}:consensus:{inp.round}"
        calls: list[CallLlmResult] = []
        helper_cost = Decimal(0)
        stop, reason = True, ""
        if inp.strategy in (Strategy.majority, Strategy.weighted):
            outcome = majority_vote(cands, inp.weights if inp.strategy is Strategy.weighted else None)
        elif inp.strategy is Strategy.adaptive:
            decision = adaptive_step(
                cands,
                target_confidence=inp.target_confidence,
                max_models=inp.max_models,
                remaining_budget_usd=inp.remaining_budget_usd,
                next_model_cost_usd=inp.next_model_cost_usd or Decimal(0),
                weights=inp.weights,
            )
            outcome, stop, reason = decision.outcome, decision.stop, decision.reason
        elif inp.strategy is Strategy.semantic:
            ok_texts = [c.text for c in cands if c.ok and c.text]
            vectors: list[list[float]] = []
            if ok_texts:
                embedded = await self.llm.billed_embed(
                    tenant_id=inp.tenant_id,
                    workflow_id=inp.workflow_id,
                    call_key=f"{key}:embed",
                    model=inp.embedding_model or DEFAULT_EMBEDDING_MODEL,
                    texts=ok_texts,
                )
                vectors = embedded.embeddings
                helper_cost = embedded.cost_usd
            outcome = semantic_consensus(cands, vectors)
        else:
            outcome, call = await self._aggregate(inp, cands, key)
            if call is not None:
                calls.append(call)
                helper_cost = call.cost_usd
        record = await self._record(inp, outcome, key)
        return ConsensusResult(record=record, stop=stop, reason=reason, calls=calls, cost_usd=helper_cost)

    async def _aggregate(
        self, inp: ConsensusInput, cands: list[CandidateAnswer], key: str
    ) -> tuple[ConsensusOutcome, CallLlmResult | None]:
        """Judge or mixture-of-agents: one aggregator call over all candidates. Without a valid
        candidate there is nothing to aggregate; when the aggregator still fails on the last
        attempt, the subtask falls back to a majority vote (noted in ``reasons``) rather than
        failing the whole run."""
        if not inp.judge_model:
            raise bad_input(f"strategy {inp.strategy.value} needs a judge model")
        if not any(c.ok and c.text for c in cands):
            return majority_vote(cands, strategy=inp.strategy.value), None
        build = judge_messages if inp.strategy is Strategy.judge else moa_messages
        try:
            call = await self.llm.billed_chat(
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                call_key=f"{key}:{inp.strategy.value}",
                request=ChatRequest(
                    model=inp.judge_model,
                    messages=_messages(build(inp.subtask.instruction, cands)),
                    max_tokens=inp.max_tokens,
                ),
            )
        except ApplicationError as err:
            if not err.non_retryable and activity.info().attempt < LLM_MAX_ATTEMPTS:
                raise
            fallback = majority_vote(cands)
            note = f"{inp.strategy.value} model failed ({err.message[:200]}); majority vote used"
            return fallback.model_copy(update={"reasons": note}), None
        text = await self._text(inp.tenant_id, call.answer)
        parse = parse_judge if inp.strategy is Strategy.judge else moa_outcome
        return parse(text, cands), call

    async def _record(self, inp: ConsensusInput, outcome: ConsensusOutcome, key: str) -> ConsensusRecord:
        answer = None
        if outcome.answer:
            async with self._sessions() as session, session.begin():
                answer = await self.llm.store.put(
                    session, inp.tenant_id, outcome.answer, idempotency_key=f"{key}:answer"
                )
        return ConsensusRecord(
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

    @activity.defn(name="synthesize")
    async def synthesize(self, inp: SynthesizeInput) -> SynthesizeResult:
        """The final answer with citations: streamed from the synthesis model (``synthesis.delta``
        events), taken as is for a one-subtask plan, or, without a model (budget exhausted),
        the completed subtask answers joined under their labels."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        answers = {sid: await self._text(inp.tenant_id, ref) for sid, ref in inp.answers.items()}
        task = await self._text(inp.tenant_id, inp.task)
        text = single_subtask_answer(inp.plan, answers)
        call: CallLlmResult | None = None
        if text is None and inp.model is None:
            text = "\n\n".join(f"{label(s.id)} {answers[s.id]}" for s in inp.plan.subtasks if s.id in answers)
        if text is None:
            publisher = DeltaPublisher(self, inp)
            call = await self.llm.billed_chat(
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                call_key=f"{inp.workflow_id}:synthesis",
                request=ChatRequest(
                    model=inp.model or "",
                    messages=_messages(synthesis_messages(task, inp.plan, answers, inp.models_by_subtask)),
                    max_tokens=inp.max_tokens,
                ),
                on_delta=publisher if inp.max_deltas > 0 else None,
            )
            await publisher.flush()
            text = await self._text(inp.tenant_id, call.answer)
            answer = call.answer
        else:
            async with self._sessions() as session, session.begin():
                answer = await self.llm.store.put(
                    session, inp.tenant_id, text, idempotency_key=f"{inp.workflow_id}:final"
                )
        citations = build_citations(text, inp.plan, inp.models_by_subtask)
        return SynthesizeResult(answer=answer, citations=citations, call=call)
