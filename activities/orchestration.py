"""Orchestration activities: thin adapters between the ``Orchestration`` workflow and the pure
planner, consensus and synthesis modules. Texts are read from and written to the payload
store; every model call goes through :class:`~activities.llm.LlmActivities`' idempotent path
(one ``model_calls`` row per ``call_key``), so a retry never pays twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.llm import LlmActivities, bad_input, heartbeating
from activities.runs import require_own_workflow
from core import events
from core.consensus import (
    CandidateAnswer,
    ConsensusOutcome,
    Voter,
    adaptive_step,
    judge_messages,
    majority_vote,
    moa_messages,
    moa_outcome,
    parse_judge,
    semantic_consensus,
    sequential_step,
)
from core.contracts import RunStatus
from core.orchestration.contracts import (
    RUN_KIND,
    Citation,
    ConsensusRecord,
    KbSource,
    PayloadRef,
    Strategy,
)
from core.orchestration.layer import OpenLayerInput, OpenLayerResult
from core.orchestration.planner import (
    PlanError,
    is_trivial,
    parse_plan,
    planner_messages,
    repair_messages,
    trivial_plan,
)
from core.orchestration.progress import CloseRun, RecordProgressInput, closed_result, run_summary
from core.orchestration.prompts import store_prompts
from core.orchestration.reliability import ReliabilityRepository
from core.orchestration.router import DEFAULT_RELIABILITY
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
from core.providers.errors import ProviderError
from core.providers.registry import ProviderRegistry
from core.providers.tokens import count_messages
from core.providers.types import EmbeddingRequest, EmbeddingResponse, Usage
from core.rag import grounding
from core.rag.search import BilledEmbeddings
from core.runs import RunRepository

# At most one synthesis.delta write per interval while text streams (a fast stream is one write).
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
        if self._next < last_seq and due:
            await self.flush()

    def take(self) -> tuple[int, str] | None:
        """The buffered text and the seq it goes under (None when nothing is due)."""
        if not self._buffer or self._next >= self._inp.delta_seq + self._inp.max_deltas:
            return None
        text, self._buffer = "".join(self._buffer), []
        self._last_flush = time.monotonic()
        self._next += 1
        return self._next - 1, text

    async def flush(self) -> None:
        pending = self.take()
        if pending is None:
            return
        llm = self._owner.llm
        async with llm.sessions() as session:
            await events.publish(
                session,
                llm.redis,
                tenant_id=self._inp.tenant_id,
                workflow_id=self._inp.workflow_id,
                type=OrchestrationEvent.synthesis_delta.value,
                data={"text": pending[1]},
                seq=pending[0],
            )


class OrchestrationActivities:
    """``load_models``, ``plan_task``, ``prepare_subtask``, ``run_consensus``, ``synthesize``,
    ``record_progress``."""

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
        """The callable catalog models with the tenant's measured reliabilities, recorded once in
        the history so routing and voting replay identically."""
        async with self._sessions() as session:
            return await self._snapshot(session, inp)

    async def _snapshot(self, session: AsyncSession, inp: LoadModelsInput) -> ModelsSnapshot:
        models = self.llm.catalog.models
        if inp.allowed is not None:
            allowed = set(inp.allowed)
            models = [m for m in models if m.id in allowed]
        measured = await ReliabilityRepository.from_session(session).measured(
            inp.tenant_id, [m.id for m in models]
        )
        return ModelsSnapshot(models=models, reliabilities=measured)

    @activity.defn(name="open_layer")
    async def open_layer(self, inp: OpenLayerInput) -> OpenLayerResult:
        """One plan layer's bookkeeping in one transaction: the queued progress, the layer's
        proposer prompts and, when asked, the catalog snapshot (as ``load_models``). Subtasks
        grounded in knowledge bases are prepared by ``prepare_subtask`` (search first) alongside."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        grounded = [bool(p.knowledge_base_ids) and grounding.grounded(p.subtask) for p in inp.prepare]
        searching = asyncio.gather(
            *(self.prepare_subtask(p) for p, g in zip(inp.prepare, grounded, strict=True) if g)
        )
        try:
            async with self._sessions() as session, session.begin():
                stored = await _store_progress(session, inp.progress) if inp.progress else []
                snapshot = await self._snapshot(session, inp.load_models) if inp.load_models else None
                plain = [p for p, g in zip(inp.prepare, grounded, strict=True) if not g]
                stored_prompts = iter(await store_prompts(session, self.llm.store, plain))
        finally:
            searched = iter(await searching)
        await events.announce_many(self.llm.redis, inp.workflow_id, stored)
        prepared = [next(searched) if g else next(stored_prompts) for g in grounded]
        return OpenLayerResult(snapshot=snapshot, prepared=prepared)

    @activity.defn(name="record_progress")
    async def record_progress(self, inp: RecordProgressInput) -> None:
        """Store a batch of the run's events and consensus gradings in one transaction, then
        publish the events (seqs assigned by the workflow: a retry rewrites nothing)."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self._sessions() as session, session.begin():
            stored = await _store_progress(session, inp)
        await events.announce_many(self.llm.redis, inp.workflow_id, stored)

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
        async with self._sessions() as session:  # the run's recorded input names its knowledge bases
            run = await RunRepository.from_session(session).find(inp.tenant_id, inp.workflow_id)
        kbs = bool(run is not None and run.input_summary.get("knowledge_base_ids"))
        prompt = _messages(planner_messages(task, knowledge_bases=kbs))
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
                prompt = _messages(repair_messages(task, output, error, knowledge_bases=kbs))
                continue
            return PlanTaskResult(plan=plan, source="planner" if attempt == 0 else "repaired", calls=calls)
        return PlanTaskResult(plan=trivial_plan(task), source="fallback", calls=calls, error=error[:500])

    @activity.defn(name="prepare_subtask")
    async def prepare_subtask(self, inp: PrepareSubtaskInput) -> PreparedPrompt:
        """Store the proposer messages of one subtask (task + dependency answers) once."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        task = await self._text(inp.tenant_id, inp.task)
        deps = {sid: await self._text(inp.tenant_id, ref) for sid, ref in inp.dependency_answers.items()}
        raw_messages = subtask_messages(task, inp.subtask, deps)
        sources: list[KbSource] = []
        costs: dict[str, Decimal] = {}
        if inp.knowledge_base_ids and grounding.grounded(inp.subtask):
            # The retrieval capability: search the run's knowledge bases (tenant-scoped). A
            # provider embedding model's query embeddings are billed once each (the local is free),
            # and their cost goes back to the workflow for the run's budget (a retry of this
            # activity finds the stored calls and reports the same cost).
            async def embed_query(req: EmbeddingRequest, n: int) -> EmbeddingResponse:
                out = await self.llm.billed_embed(
                    tenant_id=inp.tenant_id,
                    workflow_id=inp.workflow_id,
                    call_key=f"{inp.workflow_id}:retrieve:{inp.subtask.id}:{n}",
                    model=req.model,
                    texts=req.input,
                )
                costs[out.model] = costs.get(out.model, Decimal(0)) + out.cost_usd
                usage = Usage(input_tokens=out.usage.input_tokens)
                return EmbeddingResponse(model=out.model, provider="", embeddings=out.embeddings, usage=usage)

            try:
                found = await grounding.retrieve(
                    self._sessions,
                    cast(ProviderRegistry, BilledEmbeddings(embed_query)),
                    inp.tenant_id,
                    inp.knowledge_base_ids,
                    inp.subtask.instruction,
                )
            except ProviderError as err:  # a provider embedding model of a knowledge base
                raise err.to_application_error() from None
            if found:
                raw_messages = grounding.ground_messages(raw_messages, found)
                sources = grounding.sources_of(found)
        messages = _messages(raw_messages)
        raw = json.dumps([m.model_dump(exclude_none=True) for m in messages])
        async with self._sessions() as session, session.begin():
            ref = await self.llm.store.put(
                session,
                inp.tenant_id,
                raw,
                idempotency_key=f"{inp.workflow_id}:prompt:{inp.subtask.id}",
                content_type="application/json",
            )
            if sources:
                await self.llm.store.put(
                    session,
                    inp.tenant_id,
                    json.dumps([s.model_dump(mode="json") for s in sources]),
                    idempotency_key=grounding.sources_key(inp.workflow_id, inp.subtask.id),
                    content_type="application/json",
                )
        return PreparedPrompt(
            messages=ref,
            prompt_tokens=count_messages(messages),
            sources=sources,
            retrieval_cost_by_model=costs,
        )

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
        stop, reason, ask = True, "", list[str]()
        if inp.strategy in (Strategy.majority, Strategy.weighted):
            outcome = majority_vote(cands, inp.weights if inp.strategy is Strategy.weighted else None)
        elif inp.strategy is Strategy.adaptive and inp.pool_costs is not None:
            weights = inp.weights or {}
            pool = [Voter(m, weights.get(m, DEFAULT_RELIABILITY), cost) for m, cost in inp.pool_costs.items()]
            decision, ask = sequential_step(
                cands,
                pool,
                target_confidence=inp.target_confidence,
                max_models=inp.max_models,
                remaining_budget_usd=inp.remaining_budget_usd,
            )
            outcome, stop, reason = decision.outcome, decision.stop, decision.reason
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
        return ConsensusResult(
            record=record, stop=stop, reason=reason, calls=calls, cost_usd=helper_cost, ask=ask
        )

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
        the completed subtask answers joined under their labels. Heartbeats throughout: its
        database work before and after the call can wait on a busy pool."""
        async with heartbeating():
            return await self._synthesize(inp)

    async def _synthesize(self, inp: SynthesizeInput) -> SynthesizeResult:
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        progress: list[events.Event] = []
        async with self._sessions() as session:
            if inp.progress:  # the workflow's queued events come before the synthesis.delta ones
                async with session.begin():
                    progress = await _store_progress(session, inp.progress)
            texts = await self.llm.store.get_many(session, inp.tenant_id, [inp.task, *inp.answers.values()])
            sources = await grounding.load_sources(
                session, inp.tenant_id, inp.workflow_id, [s.id for s in inp.plan.subtasks]
            )
        await events.announce_many(self.llm.redis, inp.workflow_id, progress)
        task, answers = texts[0], dict(zip(inp.answers, texts[1:], strict=True))
        text = single_subtask_answer(inp.plan, answers)
        call: CallLlmResult | None = None
        publisher = DeltaPublisher(self, inp)
        if text is None and inp.model is None:
            text = "\n\n".join(f"{label(s.id)} {answers[s.id]}" for s in inp.plan.subtasks if s.id in answers)
        if text is None:
            call, text = await self.llm.billed_chat_text(
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                call_key=f"{inp.workflow_id}:synthesis",
                request=ChatRequest(
                    model=inp.model or "",
                    messages=_messages(
                        _grounded_synthesis(
                            synthesis_messages(task, inp.plan, answers, inp.models_by_subtask), sources
                        )
                    ),
                    max_tokens=inp.max_tokens,
                ),
                on_delta=publisher if inp.max_deltas > 0 else None,
            )
            if inp.close is None:  # else the last delta is written with the run's close
                await publisher.flush()
            answer = call.answer
        else:
            async with self._sessions() as session, session.begin():
                answer = await self.llm.store.put(
                    session, inp.tenant_id, text, idempotency_key=f"{inp.workflow_id}:final"
                )
        citations = build_citations(text, inp.plan, inp.models_by_subtask)
        if sources:  # provenance down to the knowledge-base chunks each subtask was shown
            citations = grounding.with_sources(citations, sources, text)
        if inp.close is not None:
            await self._close_run(inp, inp.close, answer, citations, call, publisher.take())
        return SynthesizeResult(answer=answer, citations=citations, call=call)

    async def _close_run(
        self,
        inp: SynthesizeInput,
        close: CloseRun,
        answer: PayloadRef,
        citations: list[Citation],
        call: CallLlmResult | None,
        last_delta: tuple[int, str] | None,
    ) -> None:
        """Batched runs: the last ``synthesis.delta``, the ``runs`` row (completed, with the result
        the workflow returns) and ``run.completed`` in one transaction, then published."""
        cost = call.cost_usd if call else Decimal(0)
        result = closed_result(close.result, answer, citations, close.synthesizer, cost)
        written: list[tuple[int, str, dict[str, Any]]] = []
        if last_delta is not None:
            written.append((last_delta[0], OrchestrationEvent.synthesis_delta.value, {"text": last_delta[1]}))
        written.append((close.terminal_seq, OrchestrationEvent.completed.value, run_summary(result)))
        async with self._sessions() as session, session.begin():
            await RunRepository.from_session(session).finish(
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                kind=RUN_KIND,
                status=RunStatus.completed,
                result=result.model_dump(mode="json"),
                error=None,
                cost_usd=result.cost_usd,
                created_by=close.created_by,
                run_id=close.run_id,
            )
            stored = await events.store_many(
                session, tenant_id=inp.tenant_id, workflow_id=inp.workflow_id, events=written
            )
        await events.announce_many(self.llm.redis, inp.workflow_id, stored)


async def _store_progress(session: AsyncSession, inp: RecordProgressInput) -> list[events.Event]:
    """Store a progress batch in the caller's transaction; the stored events (announce them
    after the commit)."""
    stored = await events.store_many(
        session,
        tenant_id=inp.tenant_id,
        workflow_id=inp.workflow_id,
        events=[(e.seq, e.type, e.data) for e in inp.events],
    )
    await ReliabilityRepository.from_session(session).record(
        tenant_id=inp.tenant_id, workflow_id=inp.workflow_id, observations=inp.observations
    )
    return stored


def _grounded_synthesis(
    messages: list[dict[str, str]], sources: dict[str, list[KbSource]]
) -> list[dict[str, str]]:
    """Synthesis messages; with knowledge-base sources, told to keep their ``[K:…]`` citations."""
    if not sources:
        return messages
    out = [dict(m) for m in messages]
    out[0]["content"] = f"{out[0]['content']} {grounding.SYNTHESIS_HINT}"
    return out
