"""Orchestration overhead: a NEXUS run (the ``Orchestration`` workflow) against a minimal
hand-written Temporal workflow doing the same model-call graph, side by side in one run.

    python -m bench.orchestration [--rounds 15] [--warmup 2] [--concurrency 20] [--duration 30]

One throwaway stack, stopped on exit (error or not): embedded PostgreSQL and Valkey, a Temporal
dev server in memory, the provider simulator with zero added latency
(``bench/orchestration_scenario.yaml``), and one in-process worker on a fresh task queue that
serves both workflows with the production activities.

The work: a supplied plan of 4 independent subtasks, each answered by the same 3 fixed models
(``sim-openai/gpt-4o-mini``, ``sim-gemini/gemini-2.5-flash``, ``sim-anthropic/claude-sonnet-4``),
strategy ``majority``, then one synthesis call by ``sim-openai/gpt-4o-mini``: 12 proposer calls in
4 parallel groups plus 1 synthesis call on both sides, all through the same ``call_llm`` code path
(:mod:`bench.orchestration_baseline` says what the baseline leaves out).

1. Latency: ``--rounds`` interleaved rounds (after ``--warmup`` discarded ones), each starting one
   run of each workflow in turn (the order alternates) and waiting for its result; p50/p95 wall
   time and the ratio (target: NexusAI ≤ 1.25× the baseline).
2. Where the time goes: the activities of one run of each, read from its Temporal history.
3. Throughput: ``--concurrency`` closed loops starting runs for ``--duration`` seconds, NexusAI
   then the baseline; completed runs per minute.

Prints a table and appends a section to ``bench/RESULTS.md`` (``--no-record``: print only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy.dialects.postgresql import insert
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from activities.llm import LlmActivities
from activities.orchestration import OrchestrationActivities
from activities.runs import RunActivities
from bench.orchestration_baseline import WORKFLOW as BASELINE_WORKFLOW
from bench.orchestration_baseline import BaselineInput, OrchestrationBaselineWorkflow
from cli.embedded import (
    ServerSpec,
    ensure_database,
    free_port,
    postgres_spec,
    start_server,
    stop_process,
    temporal_spec,
    valkey_spec,
)
from core.config import Settings
from core.db.engine import make_engine, make_sessionmaker
from core.db.migrate import upgrade
from core.db.models import Tenant
from core.orchestration.contracts import (
    WORKFLOW_NAME,
    OrchestrationInput,
    OrchestrationResult,
    PayloadRef,
    Plan,
    RunOutcome,
    Strategy,
    Subtask,
)
from core.orchestration.synthesis import subtask_messages
from core.payloads import PayloadStore
from core.providers import Message
from core.temporal.client import connect
from workers.main import SHUTDOWN_GRACE, make_http_client, make_registry
from workflows.orchestrate import OrchestrationWorkflow

HERE = Path(__file__).parent
RESULTS = HERE / "RESULTS.md"
SCENARIO = HERE / "orchestration_scenario.yaml"
TENANT = "t-bench"
MODELS = ["sim-openai/gpt-4o-mini", "sim-gemini/gemini-2.5-flash", "sim-anthropic/claude-sonnet-4"]
SYNTHESIZER = "sim-openai/gpt-4o-mini"
MAX_TOKENS = 256
BUDGET_USD = Decimal("10")
TARGET_RATIO = 1.25
TASK = "Answer four independent questions and combine the answers into one sentence."
PLAN = Plan(
    subtasks=[
        Subtask(id="q1", instruction="BENCH-Q1: What is the capital of France?", answer_type="short"),
        Subtask(id="q2", instruction="BENCH-Q2: What is 17 * 23?", capability="math", answer_type="short"),
        Subtask(
            id="q3", instruction="BENCH-Q3: At what Celsius temperature does water boil?", answer_type="short"
        ),
        Subtask(id="q4", instruction="BENCH-Q4: What is the largest planet?", answer_type="short"),
    ]
)
NEXUS, BASELINE = "NexusAI Orchestration", "hand-written baseline"


# --------------------------------------------------------------------------- the stack


class Processes:
    """Every server this benchmark starts; all stopped (process groups) on exit, error or not."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, spec: ServerSpec, timeout_s: float = 60.0) -> ServerSpec:
        self.procs.append(start_server(spec, timeout_s))
        return spec

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                stop_process(proc)
        self.procs.clear()


def _http_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_stack(procs: Processes, root: Path) -> Settings:
    """Postgres (migrated), Valkey, Temporal in memory and the simulator; settings pointing at them."""
    pg = procs.start(postgres_spec(root / "pg", free_port(), root / "postgres.log"))
    ensure_database(pg.port)
    upgrade(f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/nexus")
    kv = procs.start(valkey_spec(root / "valkey", free_port(), root / "valkey.log"))
    tp = procs.start(temporal_spec(None, free_port(), 0, root / "temporal.log"))
    sim_port = free_port()
    argv = [sys.executable, "-m", "core.simulator", "--port", str(sim_port), "--scenario", str(SCENARIO)]
    procs.start(
        ServerSpec(
            name="simulator",
            argv=argv,
            port=sim_port,
            log=root / "simulator.log",
            ready=lambda: _http_ready(f"http://127.0.0.1:{sim_port}/health"),
        )
    )
    return Settings(
        env="test",
        home=root / "home",
        log_json=False,
        ports={
            "postgres": pg.port,
            "redis": kv.port,
            "temporal": tp.port,
            "temporal_ui": 0,
            "simulator": sim_port,
            "worker_metrics": 0,
        },
    )


def bench_worker(
    client: Client, settings: Settings, llm: LlmActivities, runs: RunActivities, queue: str
) -> Worker:
    """The production worker's orchestration wiring (``workers.main.build_worker``: same activity
    classes, same Worker defaults) plus the baseline workflow."""
    orchestration = OrchestrationActivities(llm)
    return Worker(
        client,
        task_queue=queue,
        workflows=[OrchestrationWorkflow, OrchestrationBaselineWorkflow],
        activities=[
            runs.publish_run_event,
            runs.finish_run,
            llm.call_llm,
            llm.embed_texts,
            orchestration.load_models,
            orchestration.plan_task,
            orchestration.prepare_subtask,
            orchestration.run_consensus,
            orchestration.record_progress,
            orchestration.open_layer,
            orchestration.synthesize,
        ],
        graceful_shutdown_timeout=SHUTDOWN_GRACE,
    )


# --------------------------------------------------------------------------- measuring


@dataclass
class Figures:
    latency: dict[str, list[float]] = field(default_factory=lambda: {NEXUS: [], BASELINE: []})
    activities: dict[str, dict[str, Any]] = field(default_factory=dict)
    throughput: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Bench:
    client: Client
    queue: str
    nexus_input: Callable[[], OrchestrationInput]
    baseline_input: Callable[[], BaselineInput]
    last_ids: dict[str, str] = field(default_factory=dict)

    async def run_once(self, name: str) -> float:
        started = time.perf_counter()
        wid = f"{'nexus' if name == NEXUS else 'bench'}:{TENANT}:{uuid.uuid4().hex[:12]}"
        if name == NEXUS:
            result = await self.client.execute_workflow(
                WORKFLOW_NAME,
                self.nexus_input(),
                id=wid,
                task_queue=self.queue,
                result_type=OrchestrationResult,
            )
            elapsed = time.perf_counter() - started
            check_nexus(result)
        else:
            answer = await self.client.execute_workflow(
                BASELINE_WORKFLOW,
                self.baseline_input(),
                id=wid,
                task_queue=self.queue,
                result_type=PayloadRef,
            )
            elapsed = time.perf_counter() - started
            if not answer.preview:
                raise RuntimeError("the baseline run returned an empty answer")
        self.last_ids[name] = wid
        return elapsed


def check_nexus(result: OrchestrationResult) -> None:
    """The run must have done the full graph: 4 unanimous subtasks × 3 answers and a synthesis."""
    problems = []
    if result.outcome is not RunOutcome.completed or result.answer is None:
        problems.append(f"outcome {result.outcome}, answer {result.answer}")
    for sub in result.subtasks:
        ok = [c for c in sub.candidates if c.ok]
        if len(ok) != len(MODELS) or sub.consensus is None or sub.consensus.dissent:
            problems.append(f"subtask {sub.subtask_id}: {len(ok)} answers, consensus {sub.consensus}")
    if problems:
        raise RuntimeError("the NEXUS run did not do the benchmark's work: " + "; ".join(problems))


async def store_inputs(settings: Settings) -> tuple[PayloadRef, dict[str, PayloadRef]]:
    """The tenant, the task text and (for the baseline) the proposer prompts ``prepare_subtask``
    would store: the same JSON list of messages, stored once up front."""
    engine = make_engine(settings.database)
    store = PayloadStore()
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(Tenant).values(id=TENANT, name="bench").on_conflict_do_nothing())
            task = await store.put(session, TENANT, TASK)
            prompts = {}
            for sub in PLAN.subtasks:
                messages = [Message.model_validate(m) for m in subtask_messages(TASK, sub, {})]
                raw = json.dumps([m.model_dump(exclude_none=True) for m in messages])
                prompts[sub.id] = await store.put(session, TENANT, raw, content_type="application/json")
    finally:
        await engine.dispose()
    return task, prompts


async def activity_breakdown(client: Client, workflow_id: str) -> dict[str, Any]:
    """From one run's history: activities by type (count, summed and median start-to-close ms,
    median schedule-to-start ms), workflow tasks and history length."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    kind: dict[int, str] = {}
    scheduled_at: dict[int, float] = {}
    started_at: dict[int, float] = {}
    queue_ms: dict[str, list[float]] = defaultdict(list)
    run_ms: dict[str, list[float]] = defaultdict(list)
    busy: list[tuple[float, float]] = []
    workflow_tasks = local_activities = 0
    first = last = 0.0
    for ev in history.events:
        at = ev.event_time.ToMicroseconds() / 1000
        first = first or at
        last = at
        if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            kind[ev.event_id] = ev.activity_task_scheduled_event_attributes.activity_type.name
            scheduled_at[ev.event_id] = at
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            sid = ev.activity_task_started_event_attributes.scheduled_event_id
            started_at[sid] = at
            queue_ms[kind[sid]].append(at - scheduled_at[sid])
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            sid = ev.activity_task_completed_event_attributes.scheduled_event_id
            run_ms[kind[sid]].append(at - started_at[sid])
            busy.append((started_at[sid], at))
        elif ev.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            workflow_tasks += 1
        elif ev.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            local_activities += ev.marker_recorded_event_attributes.marker_name == "core_local_activity"
    counts = Counter(kind.values())
    return {
        "events": len(history.events),
        "workflow_tasks": workflow_tasks,
        "local_activities": local_activities,
        "server_ms": last - first,
        "busy_ms": union_ms(busy),
        "by_type": {
            name: {
                "count": counts[name],
                "sum_ms": sum(run_ms[name]),
                "p50_ms": statistics.median(run_ms[name]) if run_ms[name] else 0.0,
                "queue_p50_ms": statistics.median(queue_ms[name]) if queue_ms[name] else 0.0,
            }
            for name in sorted(counts, key=lambda n: -counts[n])
        },
    }


def union_ms(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of ``intervals`` (time with at least one activity running)."""
    total, end = 0.0, float("-inf")
    for lo, hi in sorted(intervals):
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


async def sustained(bench: Bench, name: str, concurrency: int, duration: float) -> dict[str, float]:
    """``concurrency`` closed loops starting runs of ``name`` until ``duration`` has passed."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def loop() -> None:
        while time.perf_counter() < deadline:
            latencies.append(await bench.run_once(name))

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "runs": len(latencies),
        "elapsed_s": elapsed,
        "per_min": len(latencies) / elapsed * 60,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": p95(latencies) * 1000,
    }


async def measure(settings: Settings, rounds: int, warmup: int, concurrency: int, duration: float) -> Figures:
    task, prompts = await store_inputs(settings)
    engine = make_engine(settings.database)
    sessions = make_sessionmaker(engine)
    redis = Redis.from_url(settings.redis.url, decode_responses=False)
    http = make_http_client(settings)
    figures = Figures()
    try:
        client = await connect(settings)
        registry = make_registry(settings, http)
        llm = LlmActivities(registry, registry.catalog, sessions, redis)
        queue = f"bench-orch-{uuid.uuid4().hex[:8]}"
        worker = bench_worker(client, settings, llm, RunActivities(sessions, redis), queue)
        bench = Bench(
            client=client,
            queue=queue,
            nexus_input=lambda: OrchestrationInput(
                tenant_id=TENANT,
                created_by="bench",
                task=task,
                plan=PLAN,
                strategy=Strategy.majority,
                models=MODELS,
                synthesizer_model=SYNTHESIZER,
                budget_usd=BUDGET_USD,
                max_tokens=MAX_TOKENS,
            ),
            baseline_input=lambda: BaselineInput(
                tenant_id=TENANT,
                task=TASK,
                plan=PLAN,
                prompts=prompts,
                models=MODELS,
                synthesizer_model=SYNTHESIZER,
                max_tokens=MAX_TOKENS,
            ),
        )
        async with worker:
            for round_no in range(warmup + rounds):
                order = [NEXUS, BASELINE] if round_no % 2 == 0 else [BASELINE, NEXUS]
                for name in order:
                    elapsed = await bench.run_once(name)
                    if round_no >= warmup:
                        figures.latency[name].append(elapsed)
                label = f"warm-up {round_no + 1}" if round_no < warmup else f"round {round_no + 1 - warmup}"
                done = ", ".join(
                    f"{n} {figures_last(figures, n, round_no >= warmup)}" for n in (NEXUS, BASELINE)
                )
                print(f"  {label:>10}: {done}", flush=True)
            for name in (NEXUS, BASELINE):
                figures.activities[name] = await activity_breakdown(client, bench.last_ids[name])
            for name in (NEXUS, BASELINE):
                print(f"  sustained {name}: {concurrency} loops for {duration:g} s ...", flush=True)
                figures.throughput[name] = await sustained(bench, name, concurrency, duration)
    finally:
        await http.aclose()
        await redis.aclose()
        await engine.dispose()
    return figures


def figures_last(figures: Figures, name: str, measured: bool) -> str:
    return f"{figures.latency[name][-1] * 1000:.0f} ms" if measured else "-"


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


# --------------------------------------------------------------------------- report


def report(figures: Figures, args: argparse.Namespace, load: tuple[str, str], when: str) -> str:
    lat = {n: (statistics.median(v) * 1000, p95(v) * 1000) for n, v in figures.latency.items()}
    r50, r95 = lat[NEXUS][0] / lat[BASELINE][0], lat[NEXUS][1] / lat[BASELINE][1]
    met = r50 <= TARGET_RATIO
    cmd = (
        f".venv/bin/python -m bench.orchestration --rounds {args.rounds} --warmup {args.warmup} "
        f"--concurrency {args.concurrency} --duration {args.duration:g}"
    )
    nx, bl = figures.activities[NEXUS], figures.activities[BASELINE]
    lines = [
        "",
        "## Orchestration overhead vs a hand-written workflow (`python -m bench.orchestration`)",
        "",
        "Produced by one run of",
        "",
        "```bash",
        cmd,
        "```",
        "",
        f"on {when}, {platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; 1-minute load average {load[0]} before and {load[1]} after "
        "(other sessions share the machine). One throwaway stack: embedded PostgreSQL and Valkey, a "
        "Temporal dev server in memory, the provider simulator with zero added latency "
        "(`bench/orchestration_scenario.yaml`), one in-process worker serving both workflows with the "
        "production activities (`Worker` defaults, as `workers.main.build_worker`).",
        "",
        f"Work: a supplied plan of {len(PLAN.subtasks)} independent subtasks × {len(MODELS)} fixed models "
        f"({', '.join(f'`{m}`' for m in MODELS)}), strategy `majority`, synthesis by `{SYNTHESIZER}`. "
        "The baseline (`bench/orchestration_baseline.py`) runs the same 12 `call_llm` activities in 4 "
        "parallel groups and one synthesis `call_llm`, with the prompts stored up front, and nothing "
        "else: no events, no catalog snapshot or budget ledger, no consensus, no streamed synthesis, "
        "no runs row. Every NexusAI run is checked (outcome completed, 3 answers and no dissent "
        "per subtask, an answer). Wall time is `execute_workflow` start → result from a client in "
        f"the worker's process; {args.rounds} interleaved rounds after {args.warmup} warm-up rounds.",
        "",
        "| workflow | p50 | p95 | p50 ratio | p95 ratio | target |",
        "|---|---|---|---|---|---|",
        f"| {BASELINE} | {lat[BASELINE][0]:.0f} ms | {lat[BASELINE][1]:.0f} ms | 1.00× | 1.00× | |",
        f"| {NEXUS} | {lat[NEXUS][0]:.0f} ms | {lat[NEXUS][1]:.0f} ms | **{r50:.2f}×** | {r95:.2f}× "
        f"| ≤ {TARGET_RATIO}× |",
        "",
        f"Sustained: {args.concurrency} closed loops (each starts a run, waits for its result, repeats) "
        f"for {args.duration:g} s, NexusAI first, then the baseline.",
        "",
        "| workflow | runs | runs / min | p50 | p95 |",
        "|---|---|---|---|---|",
    ]
    for name in (NEXUS, BASELINE):
        t = figures.throughput[name]
        lines.append(
            f"| {name} | {t['runs']:.0f} | **{t['per_min']:.0f}** | {t['p50_ms']:.0f} ms | {t['p95_ms']:.0f} ms |"
        )
    lines += [
        "",
        "Activities of one run of each (the last measured round), from its Temporal history: count, "
        "median start → completed, and median scheduled → started (time queued in the task queue).",
        "",
        "| activity | NexusAI | median run | median queued | baseline | median run | median queued |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys([*nx["by_type"], *bl["by_type"]]):
        a = nx["by_type"].get(name, {"count": 0})
        b = bl["by_type"].get(name, {"count": 0})

        def cells(x: dict[str, Any]) -> str:
            if not x["count"]:
                return "0 | | "
            return f"{x['count']} | {x['p50_ms']:.1f} ms | {x['queue_p50_ms']:.1f} ms"

        lines.append(f"| `{name}` | {cells(a)} | {cells(b)} |")
    total_a = sum(x["count"] for x in nx["by_type"].values())
    total_b = sum(x["count"] for x in bl["by_type"].values())
    lines += [
        f"| **total** | **{total_a}** | | | **{total_b}** | | |",
        f"| local activities (markers) | {nx['local_activities']} | | | {bl['local_activities']} | | |",
        f"| workflow tasks | {nx['workflow_tasks']} | | | {bl['workflow_tasks']} | | |",
        f"| history events | {nx['events']} | | | {bl['events']} | | |",
        f"| first → last history event | {nx['server_ms']:.0f} ms | | | {bl['server_ms']:.0f} ms | | |",
        f"| ↳ with an activity running | {nx['busy_ms']:.0f} ms | | | {bl['busy_ms']:.0f} ms | | |",
        f"| ↳ with none running | {nx['server_ms'] - nx['busy_ms']:.0f} ms | | | "
        f"{bl['server_ms'] - bl['busy_ms']:.0f} ms | | |",
        "",
        f"**Target {'met' if met else 'missed'}**: NexusAI's p50 is {r50:.2f}× the baseline's "
        f"(target ≤ {TARGET_RATIO}×).",
        "",
    ]
    return "\n".join(lines)


def print_table(figures: Figures) -> None:
    print(f"\n{'workflow':<24}{'p50':>10}{'p95':>10}{'p50 ratio':>11}{'runs/min @c':>13}")
    base = statistics.median(figures.latency[BASELINE])
    for name in (BASELINE, NEXUS):
        v = figures.latency[name]
        print(
            f"{name:<24}{statistics.median(v) * 1000:>8.0f}ms{p95(v) * 1000:>8.0f}ms"
            f"{statistics.median(v) / base:>10.2f}x{figures.throughput[name]['per_min']:>13.0f}"
        )


def loadavg() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def run(
    rounds: int = 15, warmup: int = 2, concurrency: int = 20, duration: float = 30.0, record: bool = False
) -> str:
    """Start the stack, measure, stop everything (also on error); returns the Markdown section."""
    args = argparse.Namespace(rounds=rounds, warmup=warmup, concurrency=concurrency, duration=duration)
    before = loadavg()
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="nexus-bench-orch-") as tmp:
        try:
            settings = start_stack(procs, Path(tmp))
            print(f"orchestration: {rounds} rounds (+{warmup} warm-up), load average {before}", flush=True)
            figures = asyncio.run(measure(settings, rounds, warmup, concurrency, duration))
        finally:
            after = loadavg()
            procs.stop_all()
    section = report(figures, args, (before, after), time.strftime("%Y-%m-%d"))
    print_table(figures)
    print(section)
    if record:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(section)
        print(f"appended to {RESULTS}")
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="Measured interleaved rounds.")
    parser.add_argument("--warmup", type=int, default=2, help="Discarded rounds first.")
    parser.add_argument("--concurrency", type=int, default=20, help="Closed loops in the throughput test.")
    parser.add_argument("--duration", type=float, default=30.0, help="Seconds per throughput test.")
    parser.add_argument("--no-record", action="store_true", help="Print only; do not append to RESULTS.md.")
    args = parser.parse_args()
    run(args.rounds, args.warmup, args.concurrency, args.duration, record=not args.no_record)


if __name__ == "__main__":
    from cli.ops import exit_now

    main()
    exit_now(0)  # temporalio can crash at interpreter exit (sdk-python#300)
