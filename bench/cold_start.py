"""Time ``nexus up --detach`` to healthy: cold (fresh home: initdb, migrations, bootstrap) and warm.

Each measurement is the wall time of the ``nexus up --detach`` command, which returns only
once every component answers its health check (API ``/readyz`` 200, worker polling).

    python -m bench.cold_start [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.stack import BenchStack

TARGET_S = 15.0


def run(rounds: int) -> dict[str, float]:
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(rounds):
        root = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
        stack = BenchStack(root / "home")
        try:
            cold.append(stack.up())
            stack.down()
            warm.append(stack.up())
        finally:
            stack.down()
            shutil.rmtree(root, ignore_errors=True)
    figures = {
        "cold_median_s": statistics.median(cold),
        "cold_max_s": max(cold),
        "warm_median_s": statistics.median(warm),
        "warm_max_s": max(warm),
    }
    print(f"{'start':<6} {'n':>2} {'median s':>9} {'max s':>7}  (target < {TARGET_S:.0f} s)")
    for name, values in (("cold", cold), ("warm", warm)):
        verdict = "OK" if max(values) < TARGET_S else "ABOVE TARGET"
        print(f"{name:<6} {len(values):>2} {statistics.median(values):>9.2f} {max(values):>7.2f}  {verdict}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    run(parser.parse_args().rounds)


if __name__ == "__main__":
    main()
