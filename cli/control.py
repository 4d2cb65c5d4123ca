"""``nexus up --detach``, ``down``, ``status`` and ``logs``: talk to a stack through ``$NEXUS_HOME``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cli.render import ConsoleReporter, console, err_console
from cli.runtime import (
    COMPONENTS,
    StackPaths,
    component_healthy,
    is_locked,
    read_pid,
    read_state,
    same_process,
    start_time,
    terminate_group,
)
from cli.simulator import SimulatorPlan
from cli.stack import child_env
from core.config import Settings


def tail(path: Path, lines: int = 40, since: int = 0) -> str:
    """The last ``lines`` lines of ``path``, only from byte offset ``since`` on."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(since, fh.tell() - 64_000))
            data = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _log_sizes(paths: StackPaths) -> dict[str, int]:
    return {
        n: paths.log(n).stat().st_size if paths.log(n).exists() else 0 for n in ("supervisor", *COMPONENTS)
    }


def up_detached(settings: Settings, simulator: SimulatorPlan) -> int:
    """Run the supervisor in a new session; return once the stack is healthy (or failed).

    Ports reach it through the environment (so it decides "auto" for the simulator as we did);
    an explicit ``--simulator/--no-simulator`` and the scenario through its command line.
    """
    paths = StackPaths(settings.home)
    if is_locked(paths):
        pid = read_pid(paths, "supervisor")
        err_console.print(
            f"[red]A NexusAI stack is already running on {paths.home}"
            + (f" (supervisor pid {pid})" if pid else "")
            + ".[/] Stop it with `nexus down`, or use another NEXUS_HOME and other ports."
        )
        return 1
    paths.logs.mkdir(parents=True, exist_ok=True)
    sizes = _log_sizes(paths)  # on failure, show only what this attempt wrote
    argv = [sys.executable, "-m", "cli.main", "up"]
    if simulator.forced:
        argv += ["--simulator" if simulator.enabled else "--no-simulator"]
    if simulator.scenario is not None:
        argv += ["--simulator-scenario", str(simulator.scenario)]
    read_fd, write_fd = os.pipe()
    with paths.log("supervisor").open("ab") as log:
        proc = subprocess.Popen(
            [*argv, "--supervise-fd", str(write_fd)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=True,
            env={**os.environ, **child_env(settings)},
        )
    os.close(write_fd)
    reporter = ConsoleReporter(detached=True)
    with os.fdopen(read_fd, "r") as events:
        for line in events:
            event: dict[str, Any] = json.loads(line)
            reporter.emit(event)
            if event["type"] == "ready":
                console.print(f"Supervisor running in the background (pid {proc.pid}).")
                return 0
            if event["type"] == "error":
                break
    # The supervisor failed (it stops what it started) or died: show why.
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    reporter.close()
    err_console.print(f"[red]nexus up --detach failed[/] (supervisor exit code {proc.poll()}).")
    for name in ("supervisor", *COMPONENTS):
        text = tail(paths.log(name), 15, since=sizes[name])
        if text:
            err_console.print(f"[bold]--- {paths.log(name)} (last lines) ---[/]")
            err_console.print(text, markup=False)
    return 1


def down(settings: Settings, timeout_s: float = 90.0) -> int:
    """SIGTERM the supervisor and wait until every process of the stack is gone."""
    paths = StackPaths(settings.home)
    supervisor = read_pid(paths, "supervisor")
    running = {name: pid for name in COMPONENTS if (pid := read_pid(paths, name))}
    if supervisor is None and not running:
        console.print(f"No NexusAI stack is running on {paths.home}.")
        return 0
    if supervisor is not None:
        console.print(f"Stopping the stack on {paths.home} (supervisor pid {supervisor})…")
        started = start_time(supervisor)
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and same_process(supervisor, started):
            time.sleep(0.1)
    # Anything left (a supervisor that was killed, or one that did not finish in time).
    for name in reversed(COMPONENTS):
        pid = read_pid(paths, name)
        if pid is not None:
            console.print(f"  stopping leftover {name} (pid {pid})")
            terminate_group(pid)
        paths.pidfile(name).unlink(missing_ok=True)
    leftover = [n for n in ("supervisor", *COMPONENTS) if read_pid(paths, n)]
    if leftover:
        err_console.print(f"[red]still running: {', '.join(leftover)}[/]")
        return 1
    console.print("[green]Stopped.[/]")
    return 0


def status_rows(settings: Settings) -> list[dict[str, Any]]:
    paths = StackPaths(settings.home)
    state = read_state(paths)
    info = (state or {}).get("info", {})
    urls = {
        "postgres": f"postgresql://127.0.0.1:{settings.ports.postgres}/nexus",
        "redis": f"redis://127.0.0.1:{settings.ports.redis}/0",
        "temporal": f"{info.get('Temporal', settings.temporal.address)}  UI {info.get('Temporal UI', '')}",
        "simulator": f"http://127.0.0.1:{settings.ports.simulator}",
        "worker": info.get("Worker metrics", ""),
        "api": info.get("API", settings.api.public_url),
    }
    if state:
        ports = state["ports"]
        urls["postgres"] = f"postgresql://127.0.0.1:{ports['postgres']}/nexus"
        urls["redis"] = f"redis://127.0.0.1:{ports['redis']}/0"
        urls["simulator"] = f"http://127.0.0.1:{ports.get('simulator', settings.ports.simulator)}"
    # A simulator the running stack chose not to start is "off": not counted as down.
    simulator = (state or {}).get("simulator") or {}
    rows = [
        {
            "component": "supervisor",
            "up": (pid := read_pid(paths, "supervisor")) is not None,
            "pid": pid,
            "url": str(paths.home),
            "healthy": None,
            "enabled": True,
        }
    ]
    for name in COMPONENTS:
        pid = read_pid(paths, name)
        healthy = component_healthy(name, state) if (state and pid) else None
        enabled = not (name == "simulator" and pid is None and simulator.get("enabled") is False)
        url = urls[name] if enabled else f"not started: {simulator.get('reason', '')}"
        row = {"component": name, "up": pid is not None, "pid": pid, "url": url, "healthy": healthy}
        rows.append({**row, "enabled": enabled})
    return rows


def logs(settings: Settings, component: str | None, follow: bool, lines: int) -> int:
    paths = StackPaths(settings.home)
    names = [component] if component else ["supervisor", *COMPONENTS]
    files = [paths.log(n) for n in names if paths.log(n).exists()]
    if not files:
        err_console.print(f"No logs under {paths.logs}" + (f" for {component}" if component else ""))
        return 1
    for path in files:
        if len(files) > 1:
            console.print(f"[bold]==> {path} <==[/]")
        text = tail(path, lines)
        if text:
            print(text)
    if not follow:
        return 0
    offsets = {path: path.stat().st_size for path in files}
    try:
        while True:
            for path in files:
                size = path.stat().st_size if path.exists() else 0
                if size < offsets[path]:  # truncated or rotated
                    offsets[path] = 0
                if size > offsets[path]:
                    with path.open("rb") as fh:
                        fh.seek(offsets[path])
                        chunk = fh.read().decode(errors="replace")
                    offsets[path] = size
                    prefix = f"{path.stem} | " if len(files) > 1 else ""
                    for line in chunk.splitlines():
                        print(prefix + line, flush=True)
            time.sleep(0.3)
    except KeyboardInterrupt:
        return 0
