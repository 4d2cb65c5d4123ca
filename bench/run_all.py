"""Run every benchmark in one go: ``python -m bench.run_all`` (or ``make bench``)."""

from __future__ import annotations

import argparse
import platform
import time

from bench import cold_start, connectors, consensus, evals, gateway, knowledge, orchestration, probe_overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="Probe rounds per path.")
    parser.add_argument("--rounds", type=int, default=3, help="Cold/warm start rounds.")
    args = parser.parse_args()
    print(f"NexusAI benchmarks - {time.strftime('%Y-%m-%d %H:%M')} - {platform.platform()}")
    print("\n== cold / warm start ==")
    cold_start.run(args.rounds)
    print("\n== probe overhead (API vs bare Temporal client) ==")
    probe_overhead.run(args.runs)
    print("\n== gateway overhead (direct vs NexusAI vs LiteLLM, wrk) ==")
    gateway.run()
    print("\n== consensus accuracy vs cost (simulator answer key) ==")
    consensus.run()
    print("\n== orchestration overhead (NEXUS run vs hand-written workflow) ==")
    orchestration.run()
    print("\n== knowledge bases (ingest, vector query p50/p95, HNSW recall@10) ==")
    knowledge.run()
    print("\n== connector sync (ConnectorSync workflow vs a plain loop, 50,000 records) ==")
    print(connectors.run())
    print("\n== eval runs (EvalRun workflow vs a plain asyncio loop, 1,000 cases) ==")
    print(evals.run())


if __name__ == "__main__":
    from cli.ops import exit_now

    main()
    exit_now(0)  # temporalio can crash at interpreter exit (sdk-python#300)
