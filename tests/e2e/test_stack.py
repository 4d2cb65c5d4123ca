"""The "works for a user" test: ``nexus up --detach`` / ``status`` / ``down`` / ``up`` again.

Runs the real CLI as a subprocess on a temporary ``NEXUS_HOME`` with free ports, so it never
touches a developer's own stack, then checks that state (tenant, admin key) survives a restart.
With no provider key configured the first start also runs the provider simulator, and a ``sim-*``
model answers through the API's gateway; the restart sets a key, so the simulator stays off.
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
COMPONENTS = ["supervisor", "postgres", "redis", "temporal", "simulator", "worker", "api"]
PROVIDER_KEY_VARS = [
    f"NEXUS_PROVIDERS__{name.upper()}_API_KEY"
    for name in ("openai", "anthropic", "gemini", "mistral", "deepseek", "meta")
]

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
            "simulator": free_port(),
        }
        # Settings come from the environment for every command; `up` also gets the flags.
        # No provider key (nor simulator URL) from the developer's environment: "auto" starts it.
        unset = {*PROVIDER_KEY_VARS, "NEXUS_PROVIDERS__SIMULATOR_URL", "NEXUS_PROVIDERS__API_KEYS"}
        inherited = {k: v for k, v in os.environ.items() if k not in unset}
        self.env = {
            **inherited,
            "NEXUS_HOME": str(home),
            **{f"NEXUS_PORTS__{name.upper()}": str(port) for name, port in self.ports.items()},
        }
        self.api = f"http://127.0.0.1:{self.ports['api']}"
        self.simulator = f"http://127.0.0.1:{self.ports['simulator']}"

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
            f"--simulator-port={p['simulator']}",
        )

    def status(self) -> dict[str, dict[str, object]]:
        result = self.nexus("status", "--json")
        return {row["component"]: row for row in json.loads(result.stdout)}

    def environ(self, component: str) -> dict[str, str]:
        """The environment a running component of the stack was started with."""
        pid = self.status()[component]["pid"]
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


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
    assert rows["simulator"]["healthy"] is True
    assert rows["simulator"]["url"] == stack.simulator

    # No provider key: the simulator runs, is in the table, and the API and worker point at it.
    assert f"{stack.simulator}  (simulated models sim-*)" in first.stdout
    health = httpx.get(f"{stack.simulator}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["simulated"] is True
    for component in ("api", "worker"):
        env = stack.environ(component)
        assert env.get("NEXUS_PROVIDERS__SIMULATOR_URL") == stack.simulator, component
    chat = httpx.post(
        f"{stack.api}/v1/chat/completions",
        headers={"Authorization": f"Bearer {admin_key}"},
        json={"model": "sim-openai/gpt-4o-mini", "messages": [{"role": "user", "content": "ping"}]},
        timeout=30,
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] == "pong"

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

    # With a real provider key configured, "auto" leaves the simulator off (and status still 0).
    stack.env["NEXUS_PROVIDERS__OPENAI_API_KEY"] = "sk-test-not-used"
    second = stack.up()
    assert second.returncode == 0, second.stdout + second.stderr
    assert not KEY_RE.findall(second.stdout), "a second admin key was printed"
    assert "provider simulator off: provider API keys configured (openai)" in second.stdout
    assert "Provider simulator" not in second.stdout
    off = stack.status()["simulator"]
    assert (off["up"], off["enabled"]) == (False, False), off
    assert stack.nexus("status").returncode == 0
    assert _get(stack, "/v1/keys", admin_key).status_code == 200
    assert _get(stack, "/v1/keys", dev_key).status_code == 200

    down = stack.nexus("down")
    assert down.returncode == 0, down.stderr
    assert not list((stack.home / "run").glob("*.pid"))
