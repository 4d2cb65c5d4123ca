"""Eval durability overhead: an ``EvalRun`` of N cases against a zero-latency simulated model,
against a plain asyncio loop that calls the provider layer in one process on the same cases,
side by side in one run on one throwaway stack.

    python -m bench.evals [--cases 1000] [--rounds 1]

The durable side is the production path: Temporal workflow, batches of ``batch_size`` cases as
heartbeating activities (``batch_concurrency`` in flight, ``case_concurrency`` cases each), every
model call billed once in ``model_calls``, every case stored in ``eval_case_results``, progress
events, aggregate with bootstrap CIs. The plain loop calls ``ProviderRegistry.chat`` and scores
with ``evals.metrics.score_all`` at the same total concurrency, keeping results in memory.
Prints cases/s of both and the wall-time ratio, and appends the figures to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from redis.asyncio import Redis
from sqlalchemy.dialects.postgresql import insert

from cli.embedded import (
    ServerSpec,
    ensure_database,
    free_port,
    port_open,
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
from core.providers import Catalog, ChatRequest, Message, ProviderRegistry
from core.temporal.client import connect
from evals.contracts import EvalCase, MetricContext, MetricSpec, TargetOutput
from evals.metrics import score_all
from evals.repository import DatasetRepository
from evals.targets import EvalRunInput, EvalRunResult, ModelTarget, render_prompt
from workers.main import build_worker
from workflows.eval_run import EvalRunWorkflow

RESULTS = Path(__file__).parent / "RESULTS.md"
TENANT = "t-bench-evals"
MODEL = "sim-openai/gpt-4o-mini"
METRICS = [MetricSpec(name="normalized_match"), MetricSpec(name="rougeL")]


def make_cases(n: int) -> list[EvalCase]:
    rng = random.Random(1)
    return [
        EvalCase(
            id=f"c{i:05d}",
            input=f"Question {i}: what is {rng.randint(1, 99)} + {rng.randint(1, 99)}?",
            expected="42",
        )
        for i in range(n)
    ]


async def plain_loop(settings: Settings, cases: list[EvalCase], concurrency: int) -> float:
    """The same cases through the provider layer and the metric library, no durability."""
    async with httpx.AsyncClient(
        timeout=settings.providers.timeouts.httpx_timeout(), trust_env=False
    ) as http:
        registry = ProviderRegistry(Catalog.load(settings.providers), settings.providers, http)
        gate = asyncio.Semaphore(concurrency)
        target = ModelTarget(model=MODEL, max_tokens=32)
        ctx = MetricContext()

        async def one(case: EvalCase) -> None:
            async with gate:
                started = time.perf_counter()
                resp = await registry.chat(
                    ChatRequest(
                        model=MODEL,
                        messages=[Message(role="user", content=render_prompt(target.prompt_template, case))],
                        temperature=0,
                        max_tokens=target.max_tokens,
                    )
                )
                output = TargetOutput(text=resp.content, latency_ms=(time.perf_counter() - started) * 1000)
                await score_all(METRICS, case, output, ctx)

        started = time.perf_counter()
        await asyncio.gather(*(one(c) for c in cases))
        return time.perf_counter() - started


async def measure(settings: Settings, n: int, rounds: int) -> dict[str, list[float]]:
    engine = make_engine(settings.database)
    sessions = make_sessionmaker(engine)
    redis = Redis.from_url(settings.redis.url)
    cases = make_cases(n)
    async with sessions() as session, session.begin():
        await session.execute(insert(Tenant).values(id=TENANT, name="bench").on_conflict_do_nothing())
        repo = DatasetRepository.from_session(session)
        await repo.create(TENANT, "bench", "bench", "", "bench")
        await repo.add_version(TENANT, "bench", cases, source="upload", created_by="bench")
    client = await connect(settings)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    ev = settings.evals
    concurrency = ev.batch_concurrency * ev.case_concurrency
    samples: dict[str, list[float]] = {"durable": [], "plain": []}
    async with build_worker(client, settings, sessions, redis, queue):
        for round_no in range(rounds + 1):  # round 0 warms up (small)
            size = n if round_no else min(n, 40)
            inp = EvalRunInput(
                tenant_id=TENANT,
                dataset_id="bench",
                dataset_version=1,
                target=ModelTarget(model=MODEL, max_tokens=32),
                metrics=METRICS,
                batch_size=ev.batch_size,
                batch_concurrency=ev.batch_concurrency,
                case_concurrency=ev.case_concurrency,
            )
            if not round_no:
                await plain_loop(settings, cases[:size], concurrency)
                continue
            started = time.perf_counter()
            result = await client.execute_workflow(
                EvalRunWorkflow.run,
                inp,
                id=f"eval:{TENANT}:{uuid.uuid4().hex}",
                task_queue=queue,
                result_type=EvalRunResult,
            )
            samples["durable"].append(time.perf_counter() - started)
            assert result.evaluated == n, result
            samples["plain"].append(await plain_loop(settings, cases, concurrency))
    await redis.aclose()
    await engine.dispose()
    return samples


def report(samples: dict[str, list[float]], n: int, rounds: int, settings: Settings) -> str:
    durable = statistics.median(samples["durable"])
    plain = statistics.median(samples["plain"])
    ev = settings.evals
    lines = [
        "",
        f"## Eval runs: durability overhead ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python -m bench.evals --cases {n} --rounds {rounds}` - one throwaway stack (Temporal dev server "
        "in memory, embedded Postgres and Valkey, the provider simulator with zero latency), one in-process "
        f"worker; median of {rounds} round(s) after a small warm-up. `{MODEL}`, metrics normalized_match + "
        f"rougeL, batches of {ev.batch_size} cases, {ev.batch_concurrency} batches in flight x "
        f"{ev.case_concurrency} cases each; the plain loop runs the same cases at the same total "
        f"concurrency ({ev.batch_concurrency * ev.case_concurrency}) through `ProviderRegistry.chat` and "
        "`evals.metrics.score_all` in one process, results in memory.",
        "",
        "| path | wall time | cases/s |",
        "|---|---|---|",
        f"| EvalRun workflow (billed-once calls, stored results, events, aggregate) | {durable:.2f} s | {n / durable:.0f} |",
        f"| plain asyncio loop over the provider layer | {plain:.2f} s | {n / plain:.0f} |",
        f"| durability overhead ratio | {durable / plain:.1f}x | |",
        "",
    ]
    return "\n".join(lines)


def run(cases: int = 1000, rounds: int = 1) -> str:
    """Start the servers, measure, stop them; returns the Markdown section."""
    with tempfile.TemporaryDirectory(prefix="nexus-bench-evals-") as tmp:
        root = Path(tmp)
        pg = postgres_spec(root / "pg", free_port(), root / "pg.log")
        kv = valkey_spec(root / "valkey", free_port(), root / "valkey.log")
        tp = temporal_spec(None, free_port(), 0, root / "temporal.log")
        sim_port = free_port()
        sim = ServerSpec(
            name="simulator",
            argv=[sys.executable, "-m", "core.simulator", "--port", str(sim_port)],
            port=sim_port,
            log=root / "simulator.log",
            ready=lambda: port_open(sim_port),
        )
        procs = [start_server(pg), start_server(kv), start_server(tp), start_server(sim)]
        try:
            ensure_database(pg.port)
            upgrade(f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/nexus")
            settings = Settings(
                env="test",
                home=root / "home",
                log_json=False,
                log_level="WARNING",
                ports={
                    "postgres": pg.port,
                    "redis": kv.port,
                    "temporal": tp.port,
                    "temporal_ui": 0,
                    "simulator": sim_port,
                },
            )
            samples = asyncio.run(measure(settings, cases, rounds))
        finally:
            for proc in reversed(procs):
                stop_process(proc)
    return report(samples, cases, rounds, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-record", action="store_true", help="Print only; do not append to RESULTS.md.")
    args = parser.parse_args()
    section = run(args.cases, args.rounds)
    print(section)
    if not args.no_record:
        with RESULTS.open("a") as fh:
            fh.write(section)


if __name__ == "__main__":
    from cli.ops import exit_now

    main()
    exit_now(0)  # temporalio can crash at interpreter exit (sdk-python#300)
