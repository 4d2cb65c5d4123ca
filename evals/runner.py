"""Running evaluations: one case evaluated (and billed) once, aggregates, regression, A/B compare.

Model access is injected (``LlmFactory`` / ``EmbedFactory`` give functions bound to a stable call
key prefix), so the same code runs in the ``EvalRun`` activities — where every call goes through
the billed-once ``model_calls`` path — and in tests with scripted fakes.

``eval_case_results`` has ``UNIQUE(run_id, case_id)``: :meth:`CaseEvaluator.evaluate` first looks
the row up and returns it without calling anything, so a retried batch (or a batch re-run after a
worker was killed) pays only for the cases that had not finished.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.eval_models import EvalCaseResult
from core.errors import NexusError
from core.notify import ChannelNotifier
from core.payloads import PayloadStore, preview
from core.providers.types import ChatRequest, ChatResponse
from evals.contracts import Embed, EvalCase, LlmCall, MetricContext, MetricScore, TargetOutput
from evals.repository import DatasetRepository, EvalRunRepository
from evals.stats import bootstrap_ci, mcnemar, paired_test, regression_verdict
from evals.targets import (
    AlertInput,
    CaseOutput,
    CaseSummary,
    EvalRunInput,
    KnowledgeBaseTarget,
    ModelTarget,
    render_prompt,
)

LlmFactory = Callable[[str], LlmCall]  # call key prefix -> LlmCall
EmbedFactory = Callable[[str], Embed]
# (call key, model, messages, temperature, max_tokens) -> (text, cost, latency_ms, payload id or None)
TargetCall = Callable[
    [str, str, list[dict[str, str]], float, int | None], Awaitable[tuple[str, float, float, str | None]]
]
# (call key, question) -> the knowledge-base target's output (answer, retrieved contexts, cost)
KbCall = Callable[[str, str], Awaitable[TargetOutput]]
PREVIEW = 300


class TargetFailed(Exception):
    """The target failed for one case for good (recorded as the case's error, not retried)."""


def summary_of(row: EvalCaseResult, primary: str, *, reused: bool) -> CaseSummary:
    """The workflow-facing summary of a stored result."""
    values = {s["name"]: s.get("value") for s in row.scores}
    return CaseSummary(
        case_id=row.case_id,
        values=values,
        passed=row.passed,
        cost_usd=float(row.cost_usd),
        latency_ms=row.latency_ms,
        error=row.error,
        reused=reused,
    )


def primary_score(scores: list[MetricScore], primary: str) -> MetricScore | None:
    """The primary metric's score of a case."""
    return next((s for s in scores if s.name == primary), None)


@dataclass
class CaseEvaluator:
    """Evaluates cases of one run against its target and metrics, each at most once."""

    sessions: async_sessionmaker[AsyncSession]
    store: PayloadStore
    run: EvalRunInput
    run_id: str
    llm: LlmFactory
    embed: EmbedFactory | None
    target_call: TargetCall | None
    judge_model: str | None
    kb_call: KbCall | None = None

    async def done(self, case_ids: list[str]) -> dict[str, EvalCaseResult]:
        async with self.sessions() as session:
            return await EvalRunRepository.from_session(session).results_for(
                self.run.tenant_id, self.run_id, case_ids
            )

    async def load(self, case_ids: list[str]) -> dict[str, tuple[int, EvalCase]]:
        async with self.sessions() as session:
            return await DatasetRepository.from_session(session).cases(
                self.run.tenant_id, self.run.dataset_id, self.run.dataset_version, case_ids
            )

    async def evaluate_batch(self, case_ids: list[str], concurrency: int) -> list[CaseSummary]:
        """Evaluate the model target on ``case_ids`` (stored results are returned as they are)."""
        done = await self.done(case_ids)
        pending = [c for c in case_ids if c not in done]
        cases = await self.load(pending) if pending else {}
        gate = asyncio.Semaphore(concurrency)

        async def one(case_id: str) -> Scored:
            position, case = cases[case_id]
            async with gate:
                output, output_id = await self.call_target(case)
                return await self.score(position, case, output, output_id)

        scored = await asyncio.gather(*(one(c) for c in pending))
        return self._in_order(case_ids, done, await self.store_results(list(scored)))

    def _in_order(
        self, case_ids: list[str], done: dict[str, EvalCaseResult], fresh: list[CaseSummary]
    ) -> list[CaseSummary]:
        by_id = {c.case_id: c for c in fresh}
        primary = self.run.primary()
        return [
            summary_of(done[c], primary, reused=True) if c in done else by_id[c]
            for c in case_ids
            if c in done or c in by_id
        ]

    async def score_outputs(self, outputs: list[CaseOutput], concurrency: int) -> list[CaseSummary]:
        """Score outputs produced elsewhere (child-workflow targets) and store them once."""
        ids = [o.case_id for o in outputs]
        done = await self.done(ids)
        cases = await self.load([i for i in ids if i not in done])
        gate = asyncio.Semaphore(concurrency)

        async def one(out: CaseOutput) -> Scored:
            position, case = cases[out.case_id]
            text, error = out.text, out.error
            if out.ref is not None and error is None:
                text, error = await self.resolve(out)
            output = TargetOutput(text=text, latency_ms=out.latency_ms, cost_usd=out.cost_usd, error=error)
            async with gate:
                return await self.score(position, case, output, None)

        scored = await asyncio.gather(*(one(o) for o in outputs if o.case_id not in done))
        return self._in_order(ids, done, await self.store_results(list(scored)))

    async def resolve(self, out: CaseOutput) -> tuple[str, str | None]:
        """The text behind a child workflow's output claim-check (``pick`` selects a JSON key)."""
        assert out.ref is not None
        async with self.sessions() as session:
            raw = await self.store.get(session, self.run.tenant_id, out.ref)
        if out.pick is None:
            return raw, None
        try:
            value = json.loads(raw).get(out.pick)
        except (ValueError, AttributeError):
            return "", "output is not a JSON object"
        if value is None:
            return "", f"output {out.pick!r} is missing"
        return (value if isinstance(value, str) else json.dumps(value, sort_keys=True)), None

    async def call_target(self, case: EvalCase) -> tuple[TargetOutput, str | None]:
        """The output of an in-activity target (model or knowledge base) for one case."""
        if isinstance(self.run.target, KnowledgeBaseTarget):
            return await self.call_kb(case), None
        return await self.call_model(case)

    async def call_kb(self, case: EvalCase) -> TargetOutput:
        """The knowledge-base target's answer and retrieved contexts (errors become ``error``)."""
        target = self.run.target
        assert isinstance(target, KnowledgeBaseTarget)
        assert self.kb_call is not None
        try:
            question = render_prompt(target.prompt_template, case)
        except ValueError as exc:
            return TargetOutput(text="", error=str(exc))
        try:
            return await self.kb_call(f"{self.run_id}:case:{case.id}:target", question)
        except TargetFailed as exc:
            return TargetOutput(text="", error=str(exc))

    async def call_model(self, case: EvalCase) -> tuple[TargetOutput, str | None]:
        """The model target's answer to one case (a template or provider error becomes ``error``)."""
        target = self.run.target
        assert isinstance(target, ModelTarget)
        assert self.target_call is not None
        started = time.perf_counter()
        try:
            messages = []
            if target.system_prompt:
                messages.append({"role": "system", "content": render_prompt(target.system_prompt, case)})
            messages.append({"role": "user", "content": render_prompt(target.prompt_template, case)})
        except ValueError as exc:
            return TargetOutput(text="", error=str(exc)), None
        key = f"{self.run_id}:case:{case.id}:target"
        try:
            text, cost, latency, payload_id = await self.target_call(
                key, target.model, messages, target.temperature, target.max_tokens
            )
        except TargetFailed as exc:
            return TargetOutput(text="", error=str(exc)), None
        latency = latency or (time.perf_counter() - started) * 1000
        return TargetOutput(text=text, latency_ms=latency, cost_usd=cost), payload_id

    async def score_and_store(
        self, position: int, case: EvalCase, output: TargetOutput, output_id: str | None
    ) -> CaseSummary:
        """Score one case and insert its result row once (a concurrent twin's row wins)."""
        return (await self.store_results([await self.score(position, case, output, output_id)]))[0]

    async def score(
        self, position: int, case: EvalCase, output: TargetOutput, output_id: str | None
    ) -> Scored:
        """The metric scores of one case's output (judge / embedding calls billed once)."""
        from evals.metrics import score_all

        prefix = f"{self.run_id}:case:{case.id}:metric"
        ctx = MetricContext(
            llm=self.llm(prefix),
            embed=self.embed(prefix) if self.embed is not None else None,
            judge_model=self.judge_model,
        )
        if output.error is not None:
            scores = [
                MetricScore(name=s.name, value=None, error=f"target failed: {output.error}")
                for s in self.run.metrics
            ]
        else:
            scores = list(await score_all(self.run.metrics, case, output, ctx))
        return Scored(position, case, output, output_id, scores)

    async def store_results(self, scored: list[Scored]) -> list[CaseSummary]:
        """Insert the scored cases' result rows in one transaction, each once: a case whose row
        a concurrent twin wrote first is returned as stored (``reused``)."""
        if not scored:
            return []
        tenant, primary_name = self.run.tenant_id, self.run.primary()
        rows: list[dict[str, Any]] = []
        async with self.sessions() as session, session.begin():
            for item in scored:
                output_id = item.output_id
                if output_id is None and item.output.text:
                    ref = await self.store.put(
                        session,
                        tenant,
                        item.output.text,
                        idempotency_key=f"{self.run_id}:case:{item.case.id}:output",
                    )
                    output_id = ref.id
                primary = primary_score(item.scores, primary_name)
                rows.append(
                    {
                        "tenant_id": tenant,
                        "run_id": self.run_id,
                        "case_id": item.case.id,
                        "position": item.position,
                        "scores": [s.model_dump(mode="json") for s in item.scores],
                        "primary_value": primary.value if primary else None,
                        "passed": primary.passed if primary else None,
                        "output_id": output_id,
                        "output_preview": preview(item.output.text, PREVIEW),
                        "error": item.output.error,
                        "latency_ms": item.output.latency_ms,
                        "cost_usd": Decimal(str(round(item.cost_usd, 8))),
                    }
                )
            repo = EvalRunRepository.from_session(session)
            inserted = await repo.insert_results(rows)
            lost = [item.case.id for item in scored if item.case.id not in inserted]
            twins = await repo.results_for(tenant, self.run_id, lost) if lost else {}
        out: list[CaseSummary] = []
        for item in scored:
            if item.case.id in twins:
                out.append(summary_of(twins[item.case.id], primary_name, reused=True))
                continue
            primary = primary_score(item.scores, primary_name)
            out.append(
                CaseSummary(
                    case_id=item.case.id,
                    values={s.name: s.value for s in item.scores},
                    passed=primary.passed if primary else None,
                    cost_usd=item.cost_usd,
                    latency_ms=item.output.latency_ms,
                    error=item.output.error,
                )
            )
        return out


@dataclass
class Scored:
    """One case scored, not stored yet."""

    position: int
    case: EvalCase
    output: TargetOutput
    output_id: str | None
    scores: list[MetricScore]

    @property
    def cost_usd(self) -> float:
        """The target's cost plus the metrics' (judge, embedding) costs."""
        return self.output.cost_usd + sum(s.cost_usd for s in self.scores)


# --- the knowledge-base target ----------------------------------------------------------------

# (call key, model, texts) -> (vectors, cost in USD), billed once under the call key
EmbedCall = Callable[[str, str, list[str]], Awaitable[tuple[list[list[float]], float]]]


class BilledEmbedder:
    """A provider embedding model for retrieval (``core.rag.embed.Embedder``), billed once per
    call key and normalised like :class:`core.rag.embed.ProviderEmbedder`."""

    def __init__(self, call: EmbedCall, model: str, key: str) -> None:
        self.model = model
        self._call = call
        self._key = key
        self.cost_usd = 0.0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One normalised vector per text."""
        from core.db.rag_models import EMBEDDING_DIMS
        from core.rag.embed import l2_normalise

        vectors, cost = await self._call(f"{self._key}:embed:{self.model}", self.model, texts)
        self.cost_usd += cost
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != EMBEDDING_DIMS:
            raise TargetFailed(f"embedding model {self.model!r} does not return {EMBEDDING_DIMS} dimensions")
        return [row.tolist() for row in l2_normalise(matrix)]


class BilledChat:
    """What :func:`core.rag.answer.answer` uses of a provider registry (``chat``), through the
    billed-once target path under one call key."""

    def __init__(self, call: TargetCall, key: str) -> None:
        self._call = call
        self._key = key
        self.cost_usd = 0.0

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """One billed completion as a provider response."""
        messages = [{"role": str(m.role), "content": m.text()} for m in request.messages]
        text, cost, latency, _ = await self._call(
            self._key, request.model, messages, request.temperature or 0.0, request.max_tokens
        )
        self.cost_usd += cost
        return ChatResponse(id="", model=request.model, provider="", content=text, latency_ms=latency)


async def answer_from_kb(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    target: KnowledgeBaseTarget,
    question: str,
    key: str,
    *,
    chat: TargetCall,
    embed: EmbedCall,
    min_score: float,
) -> TargetOutput:
    """Answer ``question`` from the tenant's knowledge base as ``POST /v1/knowledge-bases/{id}/answer``
    (mode ``model``) does — :func:`core.rag.search.search` (hybrid), then
    :func:`core.rag.answer.answer` — with every model call billed once under ``key``.

    ``contexts`` are the retrieved chunks in rank order (what the RAGAS metrics judge); a
    knowledge base that no longer exists is the case's error."""
    from core.providers.registry import ProviderRegistry
    from core.rag.answer import answer
    from core.rag.embed import Embedder, shared_local_embedder
    from core.rag.search import search
    from core.rag.settings import LOCAL_MODEL
    from core.rag.store import RagRepository

    started = time.perf_counter()
    billed: list[BilledEmbedder] = []

    def embedder(model: str) -> Embedder:
        if model == LOCAL_MODEL:
            return shared_local_embedder()
        billed.append(BilledEmbedder(embed, model, key))
        return billed[-1]

    async with sessions() as session:
        repo = RagRepository.from_session(session)
        try:
            kb = await repo.get_kb(tenant_id, target.knowledge_base_id)
        except NexusError as exc:
            raise TargetFailed(exc.detail) from exc
        pending = kb.pending_embedding_model
        results = await search(
            repo,
            embedder(kb.embedding_model),
            tenant_id=tenant_id,
            kb_id=kb.id,
            query=question,
            top_k=target.top_k,
            pending_embedder=embedder(pending) if pending else None,
        )
    model = BilledChat(chat, key)
    threshold = min_score if target.min_score is None else target.min_score
    # core.rag.answer.answer only calls ``registry.chat``: the billed adapter stands in for it.
    out = await answer(
        cast(ProviderRegistry, model), target.model, question, results, threshold, target.max_tokens
    )
    return TargetOutput(
        text=out.text,
        latency_ms=(time.perf_counter() - started) * 1000,
        cost_usd=model.cost_usd + sum(e.cost_usd for e in billed),
        contexts=[r.hit.text for r in results],
    )


# --- aggregates, regression, comparison ------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else None


def aggregate(rows: Sequence[EvalCaseResult], metric_names: list[str], primary: str) -> dict[str, Any]:
    """Per-metric mean with a bootstrap 95% CI and pass rate; run totals, latency p50/p95."""
    metrics: dict[str, Any] = {}
    for name in metric_names:
        values: list[float] = []
        passes: list[bool] = []
        errors = 0
        for row in rows:
            score = next((s for s in row.scores if s.get("name") == name), None)
            if score is None or score.get("value") is None:
                errors += 1
                continue
            values.append(float(score["value"]))
            if score.get("passed") is not None:
                passes.append(bool(score["passed"]))
        entry: dict[str, Any] = {"n": len(values), "errors": errors}
        if values:
            ci = bootstrap_ci(values)
            entry.update(mean=ci.mean, ci_low=ci.low, ci_high=ci.high, confidence=ci.confidence)
        if passes:
            entry["pass_rate"] = sum(passes) / len(passes)
        metrics[name] = entry
    latencies = [r.latency_ms for r in rows if r.error is None]
    return {
        "cases": len(rows),
        "target_errors": sum(1 for r in rows if r.error is not None),
        "primary_metric": primary,
        "pass_rate": metrics.get(primary, {}).get("pass_rate"),
        "metrics": metrics,
        "cost_usd": float(sum((r.cost_usd for r in rows), Decimal(0))),
        "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95)},
    }


def partial_aggregates(cases: Sequence[CaseSummary], metric_names: list[str]) -> dict[str, Any]:
    """Running means and pass rate from the summaries seen so far (deterministic, workflow-safe)."""
    out: dict[str, Any] = {}
    for name in metric_names:
        values = [c.values[name] for c in cases if c.values.get(name) is not None]
        out[name] = sum(v for v in values if v is not None) / len(values) if values else None
    passed = [c.passed for c in cases if c.passed is not None]
    return {"means": out, "pass_rate": (sum(1 for p in passed if p) / len(passed)) if passed else None}


def paired_values(
    a: Sequence[EvalCaseResult], b: Sequence[EvalCaseResult], metric: str
) -> tuple[list[str], list[float], list[float]]:
    """Case ids and the two runs' values of ``metric`` on the cases both scored."""

    def by_case(rows: Sequence[EvalCaseResult]) -> dict[str, float]:
        out: dict[str, float] = {}
        for row in rows:
            score = next((s for s in row.scores if s.get("name") == metric), None)
            if score is not None and score.get("value") is not None:
                out[row.case_id] = float(score["value"])
        return out

    va, vb = by_case(a), by_case(b)
    ids = [r.case_id for r in a if r.case_id in va and r.case_id in vb]
    return ids, [va[i] for i in ids], [vb[i] for i in ids]


def regression(
    baseline: Sequence[EvalCaseResult],
    candidate: Sequence[EvalCaseResult],
    metric: str,
    *,
    alpha: float,
    min_drop: float,
) -> dict[str, Any]:
    """The regression verdict of ``candidate`` against ``baseline`` on the paired cases."""
    ids, base, cand = paired_values(baseline, candidate, metric)
    if len(ids) < 2:
        return {"regressed": False, "n": len(ids), "metric": metric, "reason": "fewer than 2 paired cases"}
    verdict = regression_verdict(base, cand, alpha=alpha, min_drop=min_drop)
    return {**verdict.model_dump(), "metric": metric, "alpha": alpha, "min_drop": min_drop}


def compare(
    a: Sequence[EvalCaseResult],
    b: Sequence[EvalCaseResult],
    metric: str,
    *,
    method: str = "wilcoxon",
) -> dict[str, Any]:
    """Case-by-case comparison of two runs: diffs, a paired test on scores, McNemar on pass/fail."""
    ids, va, vb = paired_values(a, b, metric)
    pass_a = {r.case_id: r.passed for r in a}
    pass_b = {r.case_id: r.passed for r in b}
    diffs = [
        {"case_id": i, "a": x, "b": y, "diff": y - x, "a_passed": pass_a.get(i), "b_passed": pass_b.get(i)}
        for i, x, y in zip(ids, va, vb, strict=True)
    ]
    out: dict[str, Any] = {
        "metric": metric,
        "n": len(ids),
        "cases": diffs,
        "paired_test": None,
        "mcnemar": None,
    }
    if len(ids) >= 2:
        out["paired_test"] = paired_test(
            va, vb, method="bootstrap" if method == "bootstrap" else "wilcoxon"
        ).model_dump()
    both = [i for i in pass_a if pass_a[i] is not None and pass_b.get(i) is not None]
    if both:
        out["mcnemar"] = mcnemar(
            [bool(pass_a[i]) for i in both], [bool(pass_b[i]) for i in both]
        ).model_dump()
    return out


# --- regression alerts through the operator's notification channels (core.notify) ---------------------------


def alert_text(inp: AlertInput) -> str:
    """One line for Slack and e-mail subjects."""
    reason = inp.regression.get("reason", "")
    return (
        f"Eval regression: run {inp.workflow_id} on dataset {inp.dataset_id} v{inp.dataset_version} "
        f"vs baseline {inp.baseline_run_id}: {reason}"
    )


async def send_alert(notifier: ChannelNotifier, inp: AlertInput) -> None:
    """Deliver a regression alert through an operator-configured channel (one attempt).

    The approvals' channels and delivery path (:meth:`core.notify.ChannelNotifier.send_event`:
    SSRF check, webhook signature, Slack-compatible text, SMTP); receivers deduplicate on
    ``X-Nexus-Delivery`` (replay-stable ``delivery_id``).
    """
    text = alert_text(inp)
    await notifier.send_event(
        inp.channel,
        "eval.regressed",
        {
            "tenant_id": inp.tenant_id,
            "run_id": inp.workflow_id,
            "baseline_run_id": inp.baseline_run_id,
            "dataset": {"id": inp.dataset_id, "version": inp.dataset_version},
            "regression": inp.regression,
        },
        text,
        delivery_id=inp.delivery_id,
        email_text=text + "\n\n" + json.dumps(inp.regression, indent=2, default=str) + "\n",
    )
