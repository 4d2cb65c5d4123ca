"""Activities of the ``EvalRun`` workflow: thin adapters over :mod:`evals.runner`.

Every model call goes through :meth:`activities.llm.LlmActivities.billed_chat` (or
``billed_embed``) under a call key derived from the run, the case and the call's content, so
``model_calls`` bills each call once; every case result is one ``eval_case_results`` row behind
``UNIQUE(run_id, case_id)``, so a retried batch re-pays nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.llm import LlmActivities, bad_input, heartbeating
from activities.runs import require_own_workflow
from core import events
from core.config import Settings
from core.contracts import RunStatus
from core.errors import NexusError
from core.notify import ChannelNotifier, NotifyConfigError, notification_settings
from core.payloads import PayloadStore
from core.providers import Capability, ChatRequest, Message, cost_usd
from core.providers.types import ResponseFormat
from core.providers.types import Usage as ProviderUsage
from core.rag.answer import SYSTEM as KB_SYSTEM
from core.rag.settings import rag_settings
from core.rag.store import RagRepository
from core.runs import RunRepository
from evals.contracts import Embed, LlmCall, LlmReply, TargetOutput
from evals.repository import DatasetRepository, EvalRunRepository
from evals.runner import (
    CaseEvaluator,
    KbCall,
    TargetFailed,
    aggregate,
    answer_from_kb,
    regression,
    send_alert,
    summary_of,
)
from evals.targets import (
    RUN_KIND,
    AggregateInput,
    AlertInput,
    BatchResult,
    CaseInputsInput,
    CaseInputsResult,
    EvalRunInput,
    EvaluateBatchInput,
    FinishEvalInput,
    KnowledgeBaseTarget,
    ModelTarget,
    NexusTarget,
    PrepareInput,
    PrepareResult,
    RegressionInput,
    RegressionResult,
    ScoreOutputsInput,
    render_prompt,
)

# Attempts of the batch activity (the workflow's retry policy); on the last one a provider
# error becomes the case's error instead of failing the whole run.
BATCH_MAX_ATTEMPTS = 5
_STATUS = {
    "completed": RunStatus.completed,
    "budget_exhausted": RunStatus.completed,
    "failed": RunStatus.failed,
    "cancelled": RunStatus.cancelled,
}


def _key_digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class EvalActivities:
    """Eval run activities, bound to the worker's database, Redis and billed model path."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        llm: LlmActivities,
        settings: Settings,
    ) -> None:
        self.sessions = sessions
        self.redis = redis
        self.llm = llm
        self.settings = settings
        self.store = PayloadStore()
        self.notifier = ChannelNotifier(notification_settings(settings))

    # --- model access bound to the billed-once path -------------------------------------------

    def _llm(self, tenant_id: str, workflow_id: str) -> Any:
        def make(prefix: str) -> LlmCall:
            async def call(
                model: str,
                messages: list[dict[str, str]],
                *,
                temperature: float = 0.0,
                max_tokens: int | None = None,
                json_mode: bool = False,
            ) -> LlmReply:
                key = f"{prefix}:{_key_digest(model, messages, temperature, max_tokens, json_mode)}"
                try:
                    json_mode = json_mode and Capability.json in self.llm.catalog.get(model).capabilities
                except NexusError as exc:
                    raise bad_input(exc.detail) from exc
                request = ChatRequest(
                    model=model,
                    messages=[Message(role=m["role"], content=m["content"]) for m in messages],
                    temperature=temperature,
                    max_tokens=max_tokens,
                    response_format=ResponseFormat(type="json_object") if json_mode else None,
                )
                res = await self.llm.billed_chat(
                    tenant_id=tenant_id, workflow_id=workflow_id, call_key=key, request=request
                )
                async with self.sessions() as session:
                    text = await self.store.get(session, tenant_id, res.answer)
                return LlmReply(
                    text=text,
                    cost_usd=float(res.cost_usd),
                    input_tokens=res.usage.input_tokens,
                    output_tokens=res.usage.output_tokens,
                )

            return call

        return make

    def _embed(self, tenant_id: str, workflow_id: str, model: str) -> Any:
        def make(prefix: str) -> Embed:
            async def embed(texts: list[str]) -> list[list[float]]:
                key = f"{prefix}:embed:{_key_digest(model, texts)}"
                res = await self.llm.billed_embed(
                    tenant_id=tenant_id, workflow_id=workflow_id, call_key=key, model=model, texts=texts
                )
                return res.embeddings

            return embed

        return make

    def _target_call(self, tenant_id: str, workflow_id: str) -> Any:
        last_attempt = activity.info().attempt >= BATCH_MAX_ATTEMPTS if activity.in_activity() else False

        async def call(
            key: str, model: str, messages: list[dict[str, str]], temperature: float, max_tokens: int | None
        ) -> tuple[str, float, float, str | None]:
            request = ChatRequest(
                model=model,
                messages=[Message(role=m["role"], content=m["content"]) for m in messages],
                temperature=temperature,
                max_tokens=max_tokens,
            )
            try:
                res = await self.llm.billed_chat(
                    tenant_id=tenant_id, workflow_id=workflow_id, call_key=key, request=request
                )
            except ApplicationError as err:
                if err.non_retryable or last_attempt:
                    raise TargetFailed(err.message) from err
                raise
            async with self.sessions() as session:
                text = await self.store.get(session, tenant_id, res.answer)
            return text, float(res.cost_usd), res.latency_ms, res.answer.id

        return call

    def _kb_call(self, run: EvalRunInput, workflow_id: str) -> KbCall | None:
        target = run.target
        if not isinstance(target, KnowledgeBaseTarget):
            return None
        chat = self._target_call(run.tenant_id, workflow_id)

        async def embed(key: str, model: str, texts: list[str]) -> tuple[list[list[float]], float]:
            try:
                res = await self.llm.billed_embed(
                    tenant_id=run.tenant_id, workflow_id=workflow_id, call_key=key, model=model, texts=texts
                )
            except ApplicationError as err:
                if err.non_retryable:
                    raise TargetFailed(err.message) from err
                raise
            return res.embeddings, float(res.cost_usd)

        async def call(key: str, question: str) -> TargetOutput:
            return await answer_from_kb(
                self.sessions,
                run.tenant_id,
                target,
                question,
                key,
                chat=chat,
                embed=embed,
                min_score=rag_settings(self.settings).answer_min_score,
            )

        return call

    def evaluator(self, workflow_id: str, run: EvalRunInput) -> CaseEvaluator:
        """A case evaluator of one run whose model calls are billed once."""
        embedding = run.embedding_model or self.settings.evals.embedding_model
        return CaseEvaluator(
            sessions=self.sessions,
            store=self.store,
            run=run,
            run_id=workflow_id,
            llm=self._llm(run.tenant_id, workflow_id),
            embed=self._embed(run.tenant_id, workflow_id, embedding),
            target_call=self._target_call(run.tenant_id, workflow_id),
            judge_model=run.judge_model or self.settings.evals.judge_model,
            kb_call=self._kb_call(run, workflow_id),
        )

    # --- activities --------------------------------------------------------------------------

    @activity.defn(name="eval_prepare")
    async def eval_prepare(self, inp: PrepareInput) -> PrepareResult:
        """Record the run (idempotent; schedule-started runs have no row yet) and list its case ids."""
        require_own_workflow(inp.workflow_id, inp.run.tenant_id)
        run = inp.run
        async with self.sessions() as session, session.begin():
            datasets = DatasetRepository.from_session(session)
            try:
                await datasets.version(run.tenant_id, run.dataset_id, run.dataset_version)
            except NexusError as exc:
                raise bad_input(exc.detail) from exc
            if isinstance(run.target, KnowledgeBaseTarget):
                try:
                    await RagRepository.from_session(session).get_kb(
                        run.tenant_id, run.target.knowledge_base_id
                    )
                except NexusError as exc:
                    raise bad_input(exc.detail) from exc
            ids = await datasets.case_ids(run.tenant_id, run.dataset_id, run.dataset_version)
            chars = await datasets.mean_input_chars(run.tenant_id, run.dataset_id, run.dataset_version)
            await EvalRunRepository.from_session(session).record(
                run_id=inp.workflow_id,
                tenant_id=run.tenant_id,
                dataset_id=run.dataset_id,
                dataset_version=run.dataset_version,
                target=run.target.model_dump(mode="json"),
                metrics=[m.model_dump(mode="json") for m in run.metrics],
                baseline_run_id=run.baseline_run_id,
                schedule_id=run.schedule_id,
                budget_usd=run.budget_usd,
                case_count=len(ids),
                created_by=run.created_by,
            )
        return PrepareResult(case_ids=ids, estimate_per_case_usd=self._estimate(run, chars))

    def _estimate(self, run: EvalRunInput, mean_input_chars: float) -> float:
        """A pessimistic per-case cost before any case finished: the mean prompt (template and
        ~4 characters per token) plus the full completion budget, at catalog prices."""
        target = run.target
        if isinstance(target, NexusTarget):
            return float(target.budget_usd)
        if not isinstance(target, ModelTarget | KnowledgeBaseTarget):
            return 0.0
        try:
            entry = self.llm.catalog.get(target.model)
        except NexusError:
            return 0.0
        if isinstance(target, KnowledgeBaseTarget):  # the question plus top_k full chunks
            chunk_chars = 4 * rag_settings(self.settings).chunk_tokens
            prompt_chars = mean_input_chars + len(KB_SYSTEM) + target.top_k * chunk_chars
        else:
            prompt_chars = mean_input_chars + len(target.prompt_template) + len(target.system_prompt or "")
        usage = ProviderUsage(
            input_tokens=int(prompt_chars / 4) + 16,
            output_tokens=target.max_tokens or self.settings.providers.default_completion_tokens,
        )
        return float(cost_usd(usage, entry.prices))

    @activity.defn(name="eval_evaluate_cases")
    async def eval_evaluate_cases(self, inp: EvaluateBatchInput) -> BatchResult:
        """Evaluate a batch of cases against a model or knowledge-base target; finished cases are
        returned as stored."""
        require_own_workflow(inp.workflow_id, inp.run.tenant_id)
        evaluator = self.evaluator(inp.workflow_id, inp.run)
        async with heartbeating():
            cases = await evaluator.evaluate_batch(inp.case_ids, inp.run.case_concurrency)
        return BatchResult(cases=cases)

    @activity.defn(name="eval_case_inputs")
    async def eval_case_inputs(self, inp: CaseInputsInput) -> CaseInputsResult:
        """The rendered inputs of the batch's cases that have no result yet (child-workflow targets)."""
        require_own_workflow(inp.workflow_id, inp.run.tenant_id)
        evaluator = self.evaluator(inp.workflow_id, inp.run)
        done = await evaluator.done(inp.case_ids)
        pending = [c for c in inp.case_ids if c not in done]
        cases = await evaluator.load(pending) if pending else {}
        template = getattr(inp.run.target, "prompt_template", None)
        inputs: dict[str, str] = {}
        for case_id in pending:
            case = cases[case_id][1]
            try:
                inputs[case_id] = render_prompt(template, case) if template else case.input
            except ValueError as exc:
                raise bad_input(str(exc)) from exc
        result = CaseInputsResult(done=[summary_of(r, inp.run.primary(), reused=True) for r in done.values()])
        if not isinstance(inp.run.target, NexusTarget):
            result.inputs = inputs
            return result
        # NEXUS tasks travel as claim-checks (OrchestrationInput.task).
        async with self.sessions() as session, session.begin():
            for case_id, text in inputs.items():
                result.refs[case_id] = await self.store.put(
                    session, inp.run.tenant_id, text, idempotency_key=f"{inp.workflow_id}:case:{case_id}:task"
                )
        return result

    @activity.defn(name="eval_score_outputs")
    async def eval_score_outputs(self, inp: ScoreOutputsInput) -> BatchResult:
        """Score outputs of child-workflow targets and store each case once."""
        require_own_workflow(inp.workflow_id, inp.run.tenant_id)
        evaluator = self.evaluator(inp.workflow_id, inp.run)
        async with heartbeating():
            cases = await evaluator.score_outputs(inp.outputs, inp.run.case_concurrency)
        return BatchResult(cases=cases)

    @activity.defn(name="eval_aggregate")
    async def eval_aggregate(self, inp: AggregateInput) -> dict[str, Any]:
        """Aggregate the stored results (bootstrap CIs, pass rate, cost, latency) onto the run."""
        require_own_workflow(inp.workflow_id, inp.run.tenant_id)
        tenant = inp.run.tenant_id
        async with self.sessions() as session, session.begin():
            repo = EvalRunRepository.from_session(session)
            rows = await repo.all_results(tenant, inp.workflow_id)
            result = aggregate(rows, [m.name for m in inp.run.metrics], inp.run.primary())
            await repo.update(
                tenant, inp.workflow_id, aggregates=result, cost_usd=Decimal(str(result["cost_usd"]))
            )
        return result

    @activity.defn(name="eval_regression")
    async def eval_regression(self, inp: RegressionInput) -> RegressionResult:
        """Compare the run with its baseline (paired one-sided Wilcoxon on the primary metric)."""
        require_own_workflow(inp.workflow_id, inp.run.tenant_id)
        run, tenant = inp.run, inp.run.tenant_id
        assert run.baseline_run_id is not None
        async with self.sessions() as session, session.begin():
            repo = EvalRunRepository.from_session(session)
            try:
                await repo.get(tenant, run.baseline_run_id)
            except NexusError:
                detail = {"regressed": False, "reason": "baseline run not found"}
            else:
                detail = regression(
                    await repo.all_results(tenant, run.baseline_run_id),
                    await repo.all_results(tenant, inp.workflow_id),
                    run.primary(),
                    alpha=run.alpha,
                    min_drop=run.min_drop,
                )
            detail["baseline_run_id"] = run.baseline_run_id
            await repo.update(tenant, inp.workflow_id, regression=detail)
        return RegressionResult(regressed=bool(detail.get("regressed")), detail=detail)

    @activity.defn(name="eval_alert")
    async def eval_alert(self, inp: AlertInput) -> None:
        """Tell one operator channel that a run regressed (transport errors are retried)."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        try:
            await send_alert(self.notifier, inp)
        except NotifyConfigError as exc:
            raise ApplicationError(str(exc), type="NotifyConfigError", non_retryable=True) from exc

    @activity.defn(name="eval_finish")
    async def eval_finish(self, inp: FinishEvalInput) -> None:
        """Close ``eval_runs`` and ``runs`` and store the terminal event in one transaction."""
        require_own_workflow(inp.workflow_id, inp.run.tenant_id)
        tenant = inp.run.tenant_id
        async with self.sessions() as session, session.begin():
            repo = EvalRunRepository.from_session(session)
            run = await repo.get(tenant, inp.workflow_id)
            await repo.update(
                tenant,
                inp.workflow_id,
                status=inp.status,
                finished_at=dt.datetime.now(dt.UTC),
                cost_usd=Decimal(str(round(inp.cost_usd, 8))),
            )
            result = {
                "status": inp.status,
                "evaluated": inp.evaluated,
                "aggregates": run.aggregates,
                "regression": run.regression,
                **inp.summary,
            }
            await RunRepository.from_session(session).finish(
                tenant_id=tenant,
                workflow_id=inp.workflow_id,
                kind=RUN_KIND,
                status=_STATUS.get(inp.status, RunStatus.failed),
                result=result,
                error=inp.error,
                cost_usd=Decimal(str(round(inp.cost_usd, 6))),
                created_by=inp.run.created_by,
                run_id=activity.info().workflow_run_id,
            )
            event = await events.store(
                session,
                tenant_id=tenant,
                workflow_id=inp.workflow_id,
                type=inp.event,
                data={"status": inp.status, "evaluated": inp.evaluated, "error": inp.error},
                seq=inp.seq,
            )
        await events.announce(self.redis, inp.workflow_id, event)
