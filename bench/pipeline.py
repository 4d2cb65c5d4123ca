"""Pipeline engine overhead: a 50-step linear pipeline and a 20-way parallel step, each against a
minimal hand-written Temporal workflow that runs the same activity (``pipeline_transform``, with
the same per-step event writes), side by side in one run on one throwaway stack.

    python -m bench.pipeline [--rounds 5] [--steps 50] [--width 20]

Prints the median wall time (start → result) of each and the ratio (target: linear ≤ 1.3×),
and appends the figures to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.dialects.postgresql import insert
from temporalio.worker import Worker

from activities.pipeline_steps import PipelineActivities
from activities.runs import RunActivities
from bench.pipeline_baseline import BaselineInput, BaselineWorkflow
from cli.embedded import (
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
from core.pipelines.contracts import PipelineInput
from core.pipelines.definition import PipelineDefinition
from core.temporal.client import connect
from workflows.pipeline import PipelineWorkflow

RESULTS = Path(__file__).parent / "RESULTS.md"
TENANT = "t-bench"


def linear(steps: int) -> PipelineDefinition:
    return PipelineDefinition.model_validate(
        {
            "name": "bench-linear",
            "inputs": {"x": {"type": "integer"}},
            "steps": [{"id": f"s{i}", "type": "transform", "expression": "inputs.x"} for i in range(steps)],
        }
    )


def fan(width: int) -> PipelineDefinition:
    branches = [[{"id": f"b{i}", "type": "transform", "expression": "inputs.x"}] for i in range(width)]
    return PipelineDefinition.model_validate(
        {
            "name": "bench-fan",
            "inputs": {"x": {"type": "integer"}},
            "steps": [{"id": "fan", "type": "parallel", "branches": branches}],
        }
    )


async def measure(settings: Settings, rounds: int, steps: int, width: int) -> dict[str, list[float]]:
    engine = make_engine(settings.database)
    sessions = make_sessionmaker(engine)
    redis = Redis.from_url(settings.redis.url)
    async with sessions() as session, session.begin():
        await session.execute(insert(Tenant).values(id=TENANT, name="bench").on_conflict_do_nothing())
    client = await connect(settings)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    acts = PipelineActivities(sessions, redis, settings)
    runs = RunActivities(sessions, redis)
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[PipelineWorkflow, BaselineWorkflow],
        activities=[
            acts.pipeline_transform,
            acts.pipeline_progress,
            acts.pipeline_outputs,
            runs.finish_run,
            runs.publish_run_event,
        ],
        max_concurrent_activities=100,
    )
    cases: dict[str, Any] = {
        "pipeline linear": lambda: PipelineInput(
            tenant_id=TENANT, pipeline_id="bench", version=1, definition=linear(steps), inputs={"x": 1}
        ),
        "baseline linear": lambda: BaselineInput(tenant_id=TENANT, steps=steps),
        "pipeline parallel": lambda: PipelineInput(
            tenant_id=TENANT, pipeline_id="bench", version=1, definition=fan(width), inputs={"x": 1}
        ),
        "baseline parallel": lambda: BaselineInput(tenant_id=TENANT, steps=width, parallel=True),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    async with worker:
        for round_no in range(rounds + 1):  # round 0 warms up
            for name, make in cases.items():
                workflow = "Pipeline" if name.startswith("pipeline") else "BenchBaseline"
                started = time.perf_counter()
                await client.execute_workflow(
                    workflow, make(), id=f"bench:{TENANT}:{uuid.uuid4().hex}", task_queue=queue
                )
                if round_no:
                    samples[name].append(time.perf_counter() - started)
    await redis.aclose()
    await engine.dispose()
    return samples


def report(samples: dict[str, list[float]], steps: int, width: int, rounds: int) -> str:
    med = {k: statistics.median(v) for k, v in samples.items()}
    lin = med["pipeline linear"] / med["baseline linear"]
    par = med["pipeline parallel"] / med["baseline parallel"]
    lines = [
        "",
        f"## Pipeline engine overhead ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python -m bench.pipeline --rounds {rounds} --steps {steps} --width {width}` - one throwaway stack "
        "(Temporal dev server in memory, embedded Postgres and Valkey), one in-process worker; median of "
        f"{rounds} interleaved rounds after one warm-up. Both sides run the same `pipeline_transform` "
        "activity with the same per-step event writes; the pipeline adds `run.started`, the runs row "
        "close and its own bookkeeping.",
        "",
        "| case | NexusAI Pipeline | hand-written workflow | ratio | target |",
        "|---|---|---|---|---|",
        f"| {steps}-step linear | {med['pipeline linear'] * 1000:.0f} ms | {med['baseline linear'] * 1000:.0f} ms | {lin:.2f}x | <= 1.3x |",
        f"| {width}-way parallel step | {med['pipeline parallel'] * 1000:.0f} ms | {med['baseline parallel'] * 1000:.0f} ms | {par:.2f}x | - |",
        "",
    ]
    return "\n".join(lines)


def run(rounds: int, steps: int, width: int) -> str:
    """Start the servers, measure, stop them; returns the Markdown section."""
    with tempfile.TemporaryDirectory(prefix="nexus-bench-pipeline-") as tmp:
        root = Path(tmp)
        pg = postgres_spec(root / "pg", free_port(), root / "pg.log")
        kv = valkey_spec(root / "valkey", free_port(), root / "valkey.log")
        tp = temporal_spec(None, free_port(), 0, root / "temporal.log")
        procs = [start_server(pg), start_server(kv), start_server(tp)]
        try:
            ensure_database(pg.port)
            upgrade(f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/nexus")
            settings = Settings(
                env="test",
                home=root / "home",
                log_json=False,
                ports={"postgres": pg.port, "redis": kv.port, "temporal": tp.port, "temporal_ui": 0},  # type: ignore[arg-type]
            )
            samples = asyncio.run(measure(settings, rounds, steps, width))
        finally:
            for proc in reversed(procs):
                stop_process(proc)
    return report(samples, steps, width, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--width", type=int, default=20)
    parser.add_argument("--no-record", action="store_true", help="Print only; do not append to RESULTS.md.")
    args = parser.parse_args()
    section = run(args.rounds, args.steps, args.width)
    print(section)
    if not args.no_record:
        with RESULTS.open("a") as fh:
            fh.write(section)


if __name__ == "__main__":
    from cli.ops import exit_now

    main()
    exit_now(0)  # temporalio can crash at interpreter exit (sdk-python#300)
