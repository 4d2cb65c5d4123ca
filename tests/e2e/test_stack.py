"""The "works for a user" test: ``nexus up --detach`` / ``status`` / ``down`` / ``up`` again.

Runs the real CLI as a subprocess on a temporary ``NEXUS_HOME`` with free ports, so it never
touches a developer's own stack, then checks that state (tenant, admin key) survives a restart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.embedded import free_port, venv_bin

KEY_RE = re.compile(r"\bnx_[0-9a-f]{12}_[A-Za-z0-9_-]+")
COMPONENTS = ["supervisor", "postgres", "redis", "temporal", "worker", "api"]

pytestmark = pytest.mark.slow


class Stack:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.ports = {
            "api": free_port(),
            "temporal": free_port(),
            "temporal_ui": free_port(),
            "postgres": free_port(),
            "redis": free_port(),
            "worker_metrics": free_port(),
        }
        # Settings come from the environment for every command; `up` also gets the flags.
        self.env = {
            **os.environ,
            "NEXUS_HOME": str(home),
            **{f"NEXUS_PORTS__{name.upper()}": str(port) for name, port in self.ports.items()},
        }
        self.api = f"http://127.0.0.1:{self.ports['api']}"

    def nexus(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [venv_bin("nexus"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self) -> subprocess.CompletedProcess[str]:
        p = self.ports
        return self.nexus(
            "up",
            "--detach",
            f"--api-port={p['api']}",
            f"--temporal-port={p['temporal']}",
            f"--ui-port={p['temporal_ui']}",
            f"--postgres-port={p['postgres']}",
            f"--redis-port={p['redis']}",
            f"--metrics-port={p['worker_metrics']}",
        )

    def status(self) -> dict[str, dict[str, object]]:
        result = self.nexus("status", "--json")
        return {row["component"]: row for row in json.loads(result.stdout)}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path / "home")
    yield stack
    stack.nexus("down")  # whatever happened, leave no processes behind


def _get(stack: Stack, path: str, key: str) -> httpx.Response:
    return httpx.get(f"{stack.api}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_up_status_down_up_again(stack: Stack) -> None:
    first = stack.up()
    assert first.returncode == 0, first.stdout + first.stderr
    keys = KEY_RE.findall(first.stdout)
    assert len(keys) == 1, first.stdout
    admin_key = keys[0]
    assert "shown ONCE" in first.stdout
    # The key is shown on the console only, never written to a log file.
    for log in (stack.home / "logs").glob("*.log"):
        assert admin_key not in log.read_text(errors="replace"), log

    assert httpx.get(f"{stack.api}/readyz", timeout=10).status_code == 200
    listed = _get(stack, "/v1/keys", admin_key)
    assert listed.status_code == 200, listed.text
    assert _get(stack, "/v1/keys", "nx_000000000000_not-a-key").status_code == 401

    rows = stack.status()
    assert list(rows) == COMPONENTS
    assert all(row["up"] for row in rows.values()), rows
    assert all(row["healthy"] is not False for row in rows.values()), rows

    # A second stack on the same home is refused with a clear message.
    again = stack.up()
    assert again.returncode == 1
    assert "already running" in again.stderr + again.stdout

    # Operator path: a key issued straight in the database works against the API.
    created = stack.nexus("keys", "create", "--tenant", "acme", "--role", "developer", "--create-tenant")
    assert created.returncode == 0, created.stderr
    (dev_key,) = KEY_RE.findall(created.stdout)
    assert _get(stack, "/v1/keys", dev_key).status_code == 200
    verified = stack.nexus("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    down = stack.nexus("down")
    assert down.returncode == 0, down.stderr
    assert not list((stack.home / "run").glob("*.pid"))
    assert not any(row["up"] for row in stack.status().values())

    second = stack.up()
    assert second.returncode == 0, second.stdout + second.stderr
    assert not KEY_RE.findall(second.stdout), "a second admin key was printed"
    assert _get(stack, "/v1/keys", admin_key).status_code == 200
    assert _get(stack, "/v1/keys", dev_key).status_code == 200

    down = stack.nexus("down")
    assert down.returncode == 0, down.stderr
    assert not list((stack.home / "run").glob("*.pid"))
