"""The on-disk state of an embedded stack under ``$NEXUS_HOME``: pid files, the lock, health checks.

``nexus up`` (the supervisor) writes it; ``nexus status``, ``nexus down`` and ``nexus logs`` only
read it, so they work for a stack started with any ports as long as they get the same home.

Layout::

    $NEXUS_HOME/postgres/            PostgreSQL data directory
    $NEXUS_HOME/valkey/              Valkey append-only files
    $NEXUS_HOME/temporal/temporal.db Temporal dev server (SQLite)
    $NEXUS_HOME/logs/<component>.log one log per process (+ supervisor.log when detached)
    $NEXUS_HOME/run/<component>.pid  "<pid> <start time>" of each running process
    $NEXUS_HOME/run/supervisor.lock  flock held by the supervisor while it runs
    $NEXUS_HOME/run/stack.json       ports and URLs of the running stack
    $NEXUS_HOME/secrets.json         dev secrets (0600), generated once
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from cli.embedded import port_open, venv_bin

# Start order; the supervisor stops in reverse (api and worker first, postgres last). The
# simulator is optional: ``nexus up`` runs it only when no real provider key is configured.
COMPONENTS = ("postgres", "redis", "temporal", "simulator", "worker", "api")


class StackLocked(RuntimeError):
    """Another supervisor already runs on this home."""


@dataclass(frozen=True)
class StackPaths:
    home: Path

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def lock(self) -> Path:
        return self.run / "supervisor.lock"

    @property
    def state(self) -> Path:
        return self.run / "stack.json"

    def pidfile(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/<pid>/stat): tells pid reuse apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def write_pid(paths: StackPaths, component: str, pid: int) -> None:
    paths.run.mkdir(parents=True, exist_ok=True)
    paths.pidfile(component).write_text(f"{pid} {_start_time(pid) or ''}\n")


def read_pid(paths: StackPaths, component: str) -> int | None:
    """The pid recorded for ``component`` if that very process still runs, else ``None``."""
    try:
        parts = paths.pidfile(component).read_text().split()
        pid = int(parts[0])
    except (OSError, ValueError, IndexError):
        return None
    started = _start_time(pid)
    if started is None or (len(parts) > 1 and parts[1] != started):
        return None
    return pid


def same_process(pid: int, started: str | None) -> bool:
    """True while ``pid`` is still the (non-zombie) process that had start time ``started``."""
    return started is not None and _start_time(pid) == started


def start_time(pid: int) -> str | None:
    return _start_time(pid)


def terminate_group(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL it if still there after ``timeout_s``."""
    started = _start_time(pid)
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        # A zombie leader counts as gone: whoever adopted it reaps it, we cannot.
        while time.monotonic() < deadline:
            if not same_process(pid, started):
                return
            time.sleep(0.05)


def clear_pid(paths: StackPaths, component: str) -> None:
    paths.pidfile(component).unlink(missing_ok=True)


def acquire_lock(paths: StackPaths) -> IO[str]:
    """Take the home's supervisor lock (held until the returned file is closed or we exit)."""
    paths.run.mkdir(parents=True, exist_ok=True)
    handle = open(paths.lock, "a+")  # noqa: SIM115 - kept open for the supervisor's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        pid = read_pid(paths, "supervisor")
        raise StackLocked(
            f"a NexusAI stack is already running on {paths.home}"
            + (f" (supervisor pid {pid})" if pid else "")
            + ": stop it with `nexus down`, or use another NEXUS_HOME and other ports"
        ) from None
    return handle


def is_locked(paths: StackPaths) -> bool:
    """True while a supervisor holds the lock of this home."""
    try:
        handle = acquire_lock(paths)
    except StackLocked:
        return True
    handle.close()
    return False


def write_state(paths: StackPaths, state: dict[str, Any]) -> None:
    paths.run.mkdir(parents=True, exist_ok=True)
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(paths.state)


def read_state(paths: StackPaths) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return None
    return data


# --- health checks (shared by the supervisor's startup and `nexus status`) --------------------


def api_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def simulator_ready(port: int) -> bool:
    """The provider simulator answers ``GET /health``."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def worker_ready(metrics_port: int, temporal_port: int, task_queue: str, namespace: str = "default") -> bool:
    """The worker process polls ``task_queue`` for workflow tasks.

    Read from the worker's own Prometheus endpoint (SDK metric ``temporal_num_pollers``), so a
    restarted worker is judged on itself. The server's poller list would also show a dead worker
    for minutes; it is only the fallback when worker metrics are disabled (port 0).
    """
    if metrics_port <= 0:
        return worker_polling(temporal_port, task_queue, namespace)
    try:
        body = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2.0).text
    except httpx.HTTPError:
        return False
    for line in body.splitlines():
        if (
            line.startswith("temporal_num_pollers{")
            and 'poller_type="workflow_task"' in line
            and f'task_queue="{task_queue}"' in line
        ):
            try:
                return float(line.rsplit(" ", 1)[1]) > 0
            except ValueError:
                return False
    return False


def worker_polling(temporal_port: int, task_queue: str, namespace: str = "default") -> bool:
    """True once some worker polls ``task_queue`` (what makes workflows on it progress)."""
    if not port_open(temporal_port):
        return False
    result = subprocess.run(
        [venv_bin("temporal"), "task-queue", "describe", "--address", f"127.0.0.1:{temporal_port}"]
        + ["--namespace", namespace, "--task-queue", task_queue, "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    if result.returncode != 0:
        return False
    try:
        described = json.loads(result.stdout)
    except ValueError:
        return False
    return _has_pollers(described)


def _has_pollers(node: Any) -> bool:
    """The JSON shape differs across CLI versions: look for any non-empty ``pollers`` list."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.lower() == "pollers" and isinstance(value, list) and value:
                return True
            if _has_pollers(value):
                return True
    elif isinstance(node, list):
        return any(_has_pollers(item) for item in node)
    return False


def component_healthy(component: str, state: dict[str, Any]) -> bool:
    """Health of one component of a running stack described by ``stack.json``."""
    from cli.embedded import _pg_ready, _temporal_ready

    ports = state["ports"]
    if component == "postgres":
        return _pg_ready(ports["postgres"])
    if component == "redis":
        return port_open(ports["redis"])
    if component == "temporal":
        return _temporal_ready(ports["temporal"])
    if component == "simulator":
        return simulator_ready(ports["simulator"])
    if component == "worker":
        return worker_ready(
            ports["worker_metrics"], ports["temporal"], state["task_queue"], state.get("namespace", "default")
        )
    if component == "api":
        return api_ready(ports["api"])
    return False
