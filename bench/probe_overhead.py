"""Control-plane overhead: the Probe workflow through the API vs the bare Temporal client.

One stack, one run, interleaved: for each of N rounds, start a Probe run three ways and wait
for it to finish:

* ``api+sse``:  ``POST /v1/probes/runs`` then follow ``GET /v1/runs/{id}/events`` (SSE) until the
  terminal event - what a client of the API does;
* ``api+poll``: ``POST /v1/probes/runs`` then ``GET /v1/runs/{id}`` every 20 ms until closed;
* ``bare``:     ``client.execute_workflow("Probe", ProbeInput(...))`` with the same codec and queue.

Prints p50/p95 of each and the ratios to ``bare`` (target: api+sse p50 <= 1.25x).

    python -m bench.probe_overhead [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import httpx

from bench.stack import BenchStack, temp_stack
from core.contracts import ProbeInput, WorkflowName
from core.temporal.client import connect

TERMINAL_EVENTS = ("run.completed", "run.failed", "run.cancelled")
CLOSED = ("completed", "failed", "cancelled", "terminated", "timed_out")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


Timing = tuple[float, float]  # (start accepted, run finished), seconds since the request


async def via_api_sse(http: httpx.AsyncClient) -> Timing:
    started = time.perf_counter()
    created = (await http.post("/v1/probes/runs", json={})).raise_for_status().json()
    accepted = time.perf_counter() - started
    async with http.stream("GET", f"/v1/runs/{created['id']}/events") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event:") and line.split(":", 1)[1].strip() in TERMINAL_EVENTS:
                break
    return accepted, time.perf_counter() - started


async def via_api_poll(http: httpx.AsyncClient) -> Timing:
    started = time.perf_counter()
    created = (await http.post("/v1/probes/runs", json={})).raise_for_status().json()
    accepted = time.perf_counter() - started
    while True:
        run = (await http.get(f"/v1/runs/{created['id']}")).raise_for_status().json()
        if run["status"] in CLOSED:
            return accepted, time.perf_counter() - started
        await asyncio.sleep(0.02)


async def via_bare_client(client: Any, task_queue: str) -> Timing:
    """``start_workflow`` + ``result()``: the same as ``execute_workflow``, with the start timed too."""
    started = time.perf_counter()
    handle = await client.start_workflow(
        WorkflowName.probe.value,
        ProbeInput(tenant_id="default", created_by="bench"),
        id=f"probe:default:bench-{uuid.uuid4().hex}",
        task_queue=task_queue,
    )
    accepted = time.perf_counter() - started
    await handle.result()
    return accepted, time.perf_counter() - started


async def measure(stack: BenchStack, runs: int, warmup: int = 3) -> dict[str, list[Timing]]:
    settings = stack.settings()
    client = await connect(settings)
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    samples: dict[str, list[Timing]] = {"bare": [], "api+sse": [], "api+poll": []}
    async with httpx.AsyncClient(base_url=stack.api, headers=headers, timeout=30) as http:
        for i in range(warmup + runs):
            # Interleaved, so drift (caches, SQLite growth) hits all three paths alike.
            round_ = {
                "bare": await via_bare_client(client, settings.temporal.task_queue),
                "api+sse": await via_api_sse(http),
                "api+poll": await via_api_poll(http),
            }
            if i >= warmup:
                for name, timing in round_.items():
                    samples[name].append(timing)
    return samples


def _table(title: str, samples: dict[str, list[float]]) -> dict[str, float]:
    bare_p50, bare_p95 = statistics.median(samples["bare"]), pct(samples["bare"], 0.95)
    print(title)
    print(f"  {'path':<10} {'n':>3} {'p50 ms':>8} {'p95 ms':>8} {'p50 ratio':>10} {'p95 ratio':>10}")
    figures: dict[str, float] = {}
    for name, values in samples.items():
        p50, p95 = statistics.median(values), pct(values, 0.95)
        figures[f"{name}_p50_ms"], figures[f"{name}_p95_ms"] = p50 * 1000, p95 * 1000
        print(
            f"  {name:<10} {len(values):>3} {p50 * 1000:>8.1f} {p95 * 1000:>8.1f} "
            f"{p50 / bare_p50:>9.2f}x {p95 / bare_p95:>9.2f}x"
        )
    return figures


def report(samples: dict[str, list[Timing]]) -> dict[str, float]:
    total = {name: [t[1] for t in values] for name, values in samples.items()}
    start = {name: [t[0] for t in values] for name, values in samples.items()}
    figures = _table("start -> finished (what a caller waits for):", total)
    _table("start accepted (POST 202 vs start_workflow):", start)
    ratio = statistics.median(total["api+sse"]) / statistics.median(total["bare"])
    verdict = "OK" if ratio <= 1.25 else "ABOVE TARGET"
    print(f"api+sse / bare p50 ratio, start -> finished: {ratio:.2f}x (target <= 1.25x): {verdict}")
    figures["ratio_p50"] = ratio
    return figures


def run(runs: int) -> dict[str, float]:
    with temp_stack() as stack:
        print(f"Probe overhead: {runs} rounds (+3 warm-up), stack on {stack.api}")
        samples = asyncio.run(measure(stack, runs))
    return report(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    run(args.runs)


if __name__ == "__main__":
    from cli.ops import exit_now

    main()
    exit_now(0)  # temporalio can crash at interpreter exit (sdk-python#300)
