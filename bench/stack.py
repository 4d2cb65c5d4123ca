"""A throwaway embedded stack for benchmarks: ``nexus up --detach`` on a temp home and free ports."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cli.embedded import free_port, venv_bin
from core.config import Settings

KEY_RE = re.compile(r"\bnx_[0-9a-f]{12}_[A-Za-z0-9_-]+")


@dataclass
class BenchStack:
    home: Path
    ports: dict[str, int] = field(
        default_factory=lambda: {
            name: free_port()
            for name in ("api", "temporal", "temporal_ui", "postgres", "redis", "worker_metrics")
        }
    )
    admin_key: str | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def settings(self) -> Settings:
        return Settings(home=self.home, ports=self.ports)

    def up(self) -> float:
        """``nexus up --detach``; returns the seconds until it exited with everything healthy."""
        p = self.ports
        argv = [venv_bin("nexus"), "up", "--detach", f"--home={self.home}", f"--api-port={p['api']}"]
        argv += [f"--temporal-port={p['temporal']}", f"--ui-port={p['temporal_ui']}"]
        argv += [f"--postgres-port={p['postgres']}", f"--redis-port={p['redis']}"]
        argv += [f"--metrics-port={p['worker_metrics']}"]
        started = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"nexus up failed:\n{result.stdout}\n{result.stderr}")
        keys = KEY_RE.findall(result.stdout)
        if keys:
            self.admin_key = keys[0]
        return elapsed

    def down(self) -> None:
        subprocess.run(
            [venv_bin("nexus"), "down", f"--home={self.home}"], capture_output=True, timeout=120, check=False
        )


@contextmanager
def temp_stack() -> Iterator[BenchStack]:
    """A running stack on a fresh temp home; stopped and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    stack = BenchStack(root / "home")
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
