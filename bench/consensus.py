"""Consensus accuracy vs cost: best single model, fixed 3/5-model majority, weighted vote, adaptive.

One run, one set of recorded answers for every strategy:

1. Generate a few hundred questions (seeded): multiple choice A-D and short numeric answers. The
   right option's letter is drawn per question, so it does not systematically sort first (the
   vote breaks ties by the smallest label). The questions go into a temporary copy of
   ``bench/consensus_scenario.yaml`` (answer-key mode: seven models, accuracies 0.55-0.85, three
   correlation groups whose members err together).
2. Start the provider simulator with it (a subprocess, stopped on exit, error or not) and ask
   every model of ``bench/consensus_catalog.yaml`` every question once, through the real
   provider layer (``Catalog`` + ``ProviderRegistry``, the sim-* providers pointed at the
   simulator; at most ``--concurrency`` calls in flight). Each answer is recorded with the cost
   of its reported usage at the overlay's list prices.
3. Offline, on those answers: the first ``--calibration`` share of the questions measures each
   model's reliability (``core.consensus.reliability_update``), ranks the models and tunes
   adaptive's target confidence; the rest is the test split every figure is reported on.

Strategies (panels are the top-k models by measured reliability):

* best single: the most reliable model alone;
* fixed-3 / fixed-5 majority: ``majority_vote`` over the top 3 / top 5;
* weighted-5 / weighted-7: ``majority_vote`` with the calibrated reliabilities as weights;
* adaptive: ``run_sequential_offline`` (cost-aware sequential consensus, docs/consensus.md) over
  the fixed-5 panel, each model with its calibrated reliability and measured cost per call,
  ``max_models`` 5, no budget cap. It asks the pair most likely to agree per dollar, stops as soon
  as the leader's posterior reaches the target, and otherwise asks whoever is most likely to
  settle it per dollar;
* Beta adaptive, reliability order / cheapest first (extra rows): ``run_adaptive_offline``
  (Adaptive-Consistency's Beta stopping rule, the previous default) over the same five models in
  reliability order / by measured cost per call, with the calibrated weights.

Every adaptive row's target is tuned on the calibration split only, the same way: the cheapest
target of the grid whose calibration accuracy is at least fixed-5's there, at that target and at
every stricter one (a target that only passes by a lucky dip of a noisy 100-question split,
while a stricter one fails, is not taken).

Target (issue 4): adaptive within 1 point of fixed-5's accuracy at <= 50% of its cost. Paired
bootstrap (seeded) 95% intervals for each accuracy difference vs fixed-5 and for adaptive's
cost ratio.

Then ``--replicates`` more seeds (new questions, new simulator draws) repeat the comparison for a
stability summary.

    python -m bench.consensus [--questions 500] [--calibration 0.2] [--seed 7] [--replicates 3]
                              [--write-results]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import yaml

from cli.embedded import ServerSpec, free_port, start_server, stop_process
from core.consensus import (
    CandidateAnswer,
    Voter,
    majority_vote,
    normalize_answer,
    reliabilities,
    reliability_update,
    run_adaptive_offline,
    run_sequential_offline,
)
from core.consensus.sequential import choose_next
from core.providers import (
    Catalog,
    ChatRequest,
    Message,
    ProviderError,
    ProviderRegistry,
    ProvidersSettings,
    cost_usd,
)

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "consensus_scenario.yaml"
CATALOG = HERE / "consensus_catalog.yaml"
RESULTS = HERE / "RESULTS.md"
SECTION_TITLE = "## Consensus: accuracy vs cost (`python -m bench.consensus`)"

TARGET_LOSS_POINTS = 1.0
TARGET_COST_RATIO = 0.5
TARGET_GRID = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.875, 0.9, 0.925, 0.95, 0.97, 0.99)
ADAPTIVE_MAX_MODELS = 5
NO_BUDGET = Decimal(1_000_000)
BOOTSTRAP_SAMPLES = 2000
SYSTEM_PROMPT = (
    "Answer the question. For multiple choice, give the letter of the right option; otherwise "
    "give the number. Reply exactly as 'The answer is X.'"
)
_WORDS = (
    "river signal market ledger harbor vector canyon beacon quartz meadow lantern tundra circuit "
    "prism orchard glacier summit anchor falcon ember delta mosaic cipher atlas pillar"
).split()


# --------------------------------------------------------------------------- questions


@dataclass(frozen=True)
class Question:
    qid: str
    prompt: str
    answer: str
    wrong: tuple[str, ...]
    kind: str  # "choice" | "number"


def make_questions(n: int, seed: int) -> list[Question]:
    """``n`` questions, 70% multiple choice (A-D, right letter drawn per question), 30% numeric."""
    rng = random.Random(seed)
    questions: list[Question] = []
    for i in range(n):
        qid = f"s{seed}-q{i:05d}"  # the simulator seeds its draws by (model, id): new seed, new draws
        if rng.random() < 0.7:
            letters = ["A", "B", "C", "D"]
            right = rng.choice(letters)
            options = "\n".join(f"{x}) the {rng.choice(_WORDS)} {rng.choice(_WORDS)}" for x in letters)
            topic = " ".join(rng.sample(_WORDS, 3))
            prompt = f"[{qid}] Which option best completes the statement about {topic}?\n{options}"
            wrong = [x for x in letters if x != right]
            rng.shuffle(wrong)
            questions.append(Question(qid, prompt, right, tuple(wrong), "choice"))
        else:
            a, b = rng.randint(12, 99), rng.randint(12, 99)
            value = a * b
            near = [str(value + d) for d in rng.sample([-20, -10, -9, -1, 1, 9, 10, 20], 3)]
            questions.append(Question(qid, f"[{qid}] What is {a} * {b}?", str(value), tuple(near), "number"))
    return questions


def write_scenario(questions: Sequence[Question], path: Path) -> None:
    """The base scenario with the questions added to its answer key (match: the bracketed id)."""
    data = yaml.safe_load(SCENARIO.read_text(encoding="utf-8"))
    data["answer_key"]["questions"] = [
        {"id": q.qid, "match": re.escape(f"[{q.qid}]"), "answer": q.answer, "wrong": list(q.wrong)}
        for q in questions
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def pool_models() -> list[str]:
    """Catalog ids of the pool: every model of the overlay, in file order."""
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    return [m["id"] for m in data["models"]]


# --------------------------------------------------------------------------- collection


@dataclass
class Record:
    """One question with every model's recorded answer (text, ok, cost)."""

    qid: str
    answer: str
    answers: dict[str, CandidateAnswer] = field(default_factory=dict)

    def right(self, text: str | None) -> bool:
        return bool(text) and normalize_answer(text) == normalize_answer(self.answer)


def _http_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_simulator(scenario: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "core.simulator", "--port", str(port), "--scenario", str(scenario)]
    url = f"http://127.0.0.1:{port}"
    spec = ServerSpec(
        name="simulator", argv=argv, port=port, log=log, ready=lambda: _http_ready(f"{url}/health")
    )
    return start_server(spec, 60.0), url


async def collect(
    questions: Sequence[Question], models: Sequence[str], sim_url: str, concurrency: int
) -> list[Record]:
    """Ask every model every question once through the provider registry; record answer + cost."""
    settings = ProvidersSettings(simulator_url=sim_url, catalog_path=CATALOG)
    catalog = Catalog.load(settings)
    records = [Record(q.qid, q.answer) for q in questions]
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=settings.timeouts.httpx_timeout(), trust_env=False) as client:
        registry = ProviderRegistry(catalog, settings, client)

        async def ask(record: Record, question: Question, model: str) -> None:
            req = ChatRequest(
                model=model,
                messages=[
                    Message(role="system", content=SYSTEM_PROMPT),
                    Message(role="user", content=question.prompt),
                ],
                max_tokens=16,
                temperature=0,
            )
            async with limit:
                started = time.perf_counter()
                try:
                    resp = await registry.chat(req)
                except ProviderError as exc:
                    record.answers[model] = CandidateAnswer(model=model, text=None, ok=False, error=str(exc))
                    return
            record.answers[model] = CandidateAnswer(
                model=model,
                text=resp.content,
                cost_usd=cost_usd(resp.usage, catalog.get(model).prices),
                latency_ms=(time.perf_counter() - started) * 1000,
            )

        await asyncio.gather(*(ask(r, q, m) for r, q in zip(records, questions, strict=True) for m in models))
    return records


# --------------------------------------------------------------------------- strategies (offline)


@dataclass
class Outcome:
    """Per test question: right or not, cost paid, models called."""

    name: str
    right: list[bool]
    cost: list[Decimal]
    calls: list[int]
    note: str = ""

    @property
    def accuracy(self) -> float:
        return sum(self.right) / len(self.right)

    @property
    def total_cost(self) -> Decimal:
        return sum(self.cost, Decimal(0))

    @property
    def mean_calls(self) -> float:
        return sum(self.calls) / len(self.calls)


Strategy = Callable[[Record], tuple[bool, Decimal, int]]


def single(model: str) -> Strategy:
    def run(r: Record) -> tuple[bool, Decimal, int]:
        cand = r.answers[model]
        return r.right(cand.text if cand.ok else None), cand.cost_usd, 1

    return run


def vote(panel: Sequence[str], weights: Mapping[str, float] | None = None) -> Strategy:
    def run(r: Record) -> tuple[bool, Decimal, int]:
        cands = [r.answers[m] for m in panel]
        out = majority_vote(cands, weights)
        return r.right(out.answer), sum((c.cost_usd for c in cands), Decimal(0)), len(cands)

    return run


def adaptive(order: Sequence[str], target: float, weights: Mapping[str, float] | None) -> Strategy:
    def run(r: Record) -> tuple[bool, Decimal, int]:
        decision = run_adaptive_offline(
            [r.answers[m] for m in order],
            target_confidence=target,
            max_models=ADAPTIVE_MAX_MODELS,
            budget_usd=NO_BUDGET,
            weights=weights,
        )
        return r.right(decision.outcome.answer), decision.cost_usd, decision.models_used

    return run


def sequential(pool: Sequence[Voter], target: float) -> Strategy:
    def run(r: Record) -> tuple[bool, Decimal, int]:
        decision = run_sequential_offline(
            r.answers, pool, target_confidence=target, max_models=ADAPTIVE_MAX_MODELS
        )
        return r.right(decision.outcome.answer), decision.cost_usd, decision.models_used

    return run


def evaluate(name: str, strategy: Strategy, records: Sequence[Record], note: str = "") -> Outcome:
    rows = [strategy(r) for r in records]
    return Outcome(name, [x[0] for x in rows], [x[1] for x in rows], [x[2] for x in rows], note)


def calibrate(records: Sequence[Record], models: Sequence[str]) -> dict[str, float]:
    """Each model's Beta-posterior reliability over the graded calibration answers."""
    counts: dict[str, tuple[int, int]] = {m: (0, 0) for m in models}
    for r in records:
        for m in models:
            cand = r.answers[m]
            counts, _ = reliability_update(counts, m, r.right(cand.text if cand.ok else None))
    return reliabilities(counts)


def tune_target(calib: Sequence[Record], factory: Callable[[float], Strategy], floor: float) -> float:
    """The cheapest grid target whose calibration accuracy is >= ``floor`` there and at every
    stricter target of the grid (else the most accurate target).

    Equal cost and accuracy go to the higher (more conservative) target.
    """
    scored = []
    for target in TARGET_GRID:
        out = evaluate("tune", factory(target), calib)
        scored.append((target, out.accuracy, out.total_cost))
    ok = [s for i, s in enumerate(scored) if all(t[1] >= floor - 1e-12 for t in scored[i:])]
    if ok:
        return min(ok, key=lambda s: (s[2], -s[1], -s[0]))[0]
    return max(scored, key=lambda s: (s[1], -s[2], s[0]))[0]


@dataclass(frozen=True)
class SweepRow:
    """Adaptive at one grid target: calibration and test accuracy difference vs fixed-5, cost, calls."""

    target: float
    calib_diff: float
    test_diff: float
    cost_ratio: float
    calls: float


def sweep(
    calib: Sequence[Record],
    test: Sequence[Record],
    factory: Callable[[float], Strategy],
    panel: Sequence[str],
) -> list[SweepRow]:
    """Every grid target on both splits (for the report; the choice is made on calibration only)."""
    f5c, f5t = evaluate("c", vote(panel), calib), evaluate("t", vote(panel), test)
    rows = []
    for target in TARGET_GRID:
        c = evaluate("c", factory(target), calib)
        t = evaluate("t", factory(target), test)
        rows.append(
            SweepRow(
                target,
                100.0 * (c.accuracy - f5c.accuracy),
                100.0 * (t.accuracy - f5t.accuracy),
                float(t.total_cost / f5t.total_cost),
                t.mean_calls,
            )
        )
    return rows


ADAPTIVE, BETA, BETA_CHEAP = "adaptive", "Beta adaptive, reliability order", "Beta adaptive, cheapest first"


@dataclass
class Comparison:
    models: list[str]
    reliability: dict[str, float]
    test_accuracy: dict[str, float]
    cost_per_call: dict[str, Decimal]
    n_calib: int
    n_test: int
    outcomes: list[Outcome]
    targets: dict[str, float]  # adaptive row -> target tuned on calibration
    sweeps: dict[str, list[SweepRow]]  # adaptive row -> every grid target
    failed_calls: int
    floor_ratio: float  # cost of the first two models in reliability order / fixed-5 cost
    pair_ratio: float  # cost of adaptive's first pair / fixed-5 cost
    first_pair: tuple[str, str]


def compare(records: Sequence[Record], models: Sequence[str], calibration: float) -> Comparison:
    """Every strategy on the same recorded answers: calibrate on the first split, report on the rest."""
    n_calib = max(1, round(len(records) * calibration))
    calib, test = list(records[:n_calib]), list(records[n_calib:])
    weights = calibrate(calib, models)
    ranked = sorted(models, key=lambda m: (-weights[m], m))
    cost_per_call = {m: sum((r.answers[m].cost_usd for r in calib), Decimal(0)) / len(calib) for m in models}
    top3, top5 = ranked[:3], ranked[:5]
    floor = evaluate("fixed-5", vote(top5), calib).accuracy
    cheap_order = sorted(top5, key=lambda m: (cost_per_call[m], m))
    pool = [Voter(m, weights[m], cost_per_call[m]) for m in top5]
    factories: dict[str, Callable[[float], Strategy]] = {
        ADAPTIVE: lambda t: sequential(pool, t),
        BETA: lambda t: adaptive(top5, t, weights),
        BETA_CHEAP: lambda t: adaptive(cheap_order, t, weights),
    }
    targets = {name: tune_target(calib, factory, floor) for name, factory in factories.items()}
    notes = {
        ADAPTIVE: "fixed-5 panel, cost-aware, posterior target",
        BETA: "reliability order",
        BETA_CHEAP: "cheapest first",
    }
    outcomes = [
        evaluate("best single", single(ranked[0]), test, ranked[0]),
        evaluate("fixed-3 majority", vote(top3), test, ", ".join(top3)),
        evaluate("fixed-5 majority", vote(top5), test, ", ".join(top5)),
        evaluate("weighted-5 vote", vote(top5, weights), test, "fixed-5 panel, log-odds weights"),
        evaluate("weighted-7 vote", vote(ranked, weights), test, "all seven"),
        *(
            evaluate(name, factory(targets[name]), test, f"target {targets[name]:g}, {notes[name]}")
            for name, factory in factories.items()
        ),
    ]
    test_accuracy = {
        m: sum(r.right(r.answers[m].text if r.answers[m].ok else None) for r in test) / len(test)
        for m in models
    }
    failed = sum(1 for r in records for c in r.answers.values() if not c.ok)
    panel_cost = sum((cost_per_call[m] for m in top5), Decimal(0))
    first = choose_next([], pool, target_confidence=targets[ADAPTIVE])
    pair = (first[0].model, first[1].model) if len(first) == 2 else (first[0].model, first[0].model)
    return Comparison(
        models=list(models),
        reliability=weights,
        test_accuracy=test_accuracy,
        cost_per_call=cost_per_call,
        n_calib=len(calib),
        n_test=len(test),
        outcomes=outcomes,
        targets=targets,
        sweeps={name: sweep(calib, test, factory, top5) for name, factory in factories.items()},
        failed_calls=failed,
        floor_ratio=float((cost_per_call[top5[0]] + cost_per_call[top5[1]]) / panel_cost),
        pair_ratio=float(sum((cost_per_call[m] for m in set(pair)), Decimal(0)) / panel_cost),
        first_pair=pair,
    )


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def bootstrap(
    outcome: Outcome, baseline: Outcome, seed: int, samples: int = BOOTSTRAP_SAMPLES
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Paired bootstrap 95% intervals: accuracy difference (points) and cost ratio vs ``baseline``."""
    rng = random.Random(seed)
    n = len(outcome.right)
    a = [int(x) for x in outcome.right]
    b = [int(x) for x in baseline.right]
    ca = [float(x) for x in outcome.cost]
    cb = [float(x) for x in baseline.cost]
    diffs: list[float] = []
    ratios: list[float] = []
    for _ in range(samples):
        idx = [rng.randrange(n) for _ in range(n)]
        diffs.append(100.0 * sum(a[i] - b[i] for i in idx) / n)
        base = sum(cb[i] for i in idx)
        ratios.append(sum(ca[i] for i in idx) / base if base else 0.0)
    return (percentile(diffs, 0.025), percentile(diffs, 0.975)), (
        percentile(ratios, 0.025),
        percentile(ratios, 0.975),
    )


# --------------------------------------------------------------------------- report


def record_answers(
    questions: Sequence[Question], models: Sequence[str], concurrency: int
) -> tuple[list[Record], float]:
    """Start a simulator with these questions, ask every model, stop it (also on error)."""
    root = Path(tempfile.mkdtemp(prefix="nexus-bench-consensus-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        scenario = root / "scenario.yaml"
        write_scenario(questions, scenario)
        proc, url = start_simulator(scenario, root / "simulator.log")
        started = time.perf_counter()
        records = asyncio.run(collect(questions, models, url, concurrency))
        return records, time.perf_counter() - started
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)


def run(
    questions: int = 500,
    calibration: float = 0.2,
    seed: int = 7,
    concurrency: int = 32,
    replicates: int = 3,
    args: argparse.Namespace | None = None,
    write: bool = False,
) -> dict[str, Any]:
    models = pool_models()
    qs = make_questions(questions, seed)
    records, elapsed = record_answers(qs, models, concurrency)
    print(
        f"{questions} questions x {len(models)} models = {questions * len(models)} calls through "
        f"ProviderRegistry in {elapsed:.1f} s (concurrency {concurrency})"
    )
    from bench.consensus_report import machine, notes, replication_table, report, write_results

    cmp = compare(records, models, calibration)
    if cmp.failed_calls:
        print(f"warning: {cmp.failed_calls} calls failed (recorded as failed candidates)")
    print(f"calibration: {cmp.n_calib} questions; test: {cmp.n_test} questions\n")
    table, figures = report(cmp, seed)
    figures.update(n_calib=cmp.n_calib, n_test=cmp.n_test)
    figures["notes"] = notes(figures)
    rows = [(seed, cmp)]
    for k in range(1, replicates + 1):
        rep_records, _ = record_answers(make_questions(questions, seed + k), models, concurrency)
        rows.append((seed + k, compare(rep_records, models, calibration)))
    figures["replications"] = replication_table(rows)
    if write:
        ns = args or argparse.Namespace(
            questions=questions,
            calibration=calibration,
            seed=seed,
            concurrency=concurrency,
            replicates=replicates,
        )
        write_results(table, figures, ns, machine())
    return figures


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=500, help="Questions generated (seeded).")
    parser.add_argument("--calibration", type=float, default=0.2, help="Share used for calibration.")
    parser.add_argument("--seed", type=int, default=7, help="Seeds the questions and the bootstrap.")
    parser.add_argument("--concurrency", type=int, default=32, help="Model calls in flight.")
    parser.add_argument(
        "--replicates", type=int, default=3, help="Extra seeds (seed+1..) run for a stability summary."
    )
    parser.add_argument("--write-results", action="store_true", help="Update this section of RESULTS.md.")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _sigterm)
    run(
        args.questions,
        args.calibration,
        args.seed,
        args.concurrency,
        args.replicates,
        args,
        args.write_results,
    )


if __name__ == "__main__":
    main()
