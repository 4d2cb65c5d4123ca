"""The ``nexus up`` supervisor: runs the embedded stack as child processes and keeps it running.

Start order: PostgreSQL, Valkey, Temporal and (when no real provider key is configured) the
provider simulator, spawned together, each awaited on its own health check; then the database
and migrations, the first-start bootstrap (platform tenant + owner key), then the worker and
the API. SIGINT/SIGTERM stop everything in reverse order.

Restart policy: a child that exits while the stack runs is restarted after 1, 2, 4, 8, 16 s;
a child that stayed up for 60 s has its count reset. After 5 failed restarts in a row the
supervisor stops the whole stack and exits 1 (so ``nexus status`` then shows it down rather
than half up).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cli.embedded import (
    ServerSpec,
    ensure_database,
    port_open,
    postgres_spec,
    spawn_server,
    stop_process,
    temporal_spec,
    valkey_spec,
)
from cli.runtime import (
    COMPONENTS,
    StackPaths,
    acquire_lock,
    api_ready,
    clear_pid,
    read_pid,
    terminate_group,
    worker_ready,
    write_pid,
    write_state,
)
from cli.simulator import SimulatorPlan, embedded_url, simulator_spec
from core.config import Settings

log = logging.getLogger("nexus.supervisor")

MAX_RESTARTS = 5
STABLE_AFTER_S = 60.0
INFRA_TIMEOUT_S = 60.0
APP_TIMEOUT_S = 90.0


class Reporter(Protocol):
    """Receives startup progress: ``begin``/``done`` per step, then ``ready`` or ``error``."""

    def emit(self, event: dict[str, Any]) -> None: ...


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived while the stack was starting."""


class StartupFailed(RuntimeError):
    """A component did not become healthy; carries its log tail."""


@dataclass
class Component:
    name: str
    make_spec: Callable[[], ServerSpec]
    timeout_s: float
    spec: ServerSpec | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0


def child_env(settings: Settings, simulator: bool = False) -> dict[str, str]:
    """Environment that makes a child process resolve the same home and ports as the supervisor.

    With ``simulator``, the children's ``sim-*`` models point at the embedded simulator.
    """
    p = settings.ports
    env = {
        "NEXUS_HOME": str(settings.home),
        "NEXUS_PORTS__API": str(p.api),
        "NEXUS_PORTS__TEMPORAL": str(p.temporal),
        "NEXUS_PORTS__TEMPORAL_UI": str(p.temporal_ui),
        "NEXUS_PORTS__POSTGRES": str(p.postgres),
        "NEXUS_PORTS__REDIS": str(p.redis),
        "NEXUS_PORTS__WORKER_METRICS": str(p.worker_metrics),
        "NEXUS_PORTS__SIMULATOR": str(p.simulator),
        "PYTHONUNBUFFERED": "1",
    }
    if simulator:
        env["NEXUS_PROVIDERS__SIMULATOR_URL"] = embedded_url(settings)
    return env


def stack_info(settings: Settings, simulator: bool = False) -> dict[str, str]:
    """The URLs printed by ``nexus up`` and ``nexus status``."""
    api = settings.api.public_url.rstrip("/")
    info = {
        "API": api,
        "OpenAPI docs": f"{api}/docs",
        "Temporal UI": settings.temporal.ui_url if settings.ports.temporal_ui > 0 else "(headless)",
        "API metrics": f"{api}/metrics",
        "Worker metrics": f"http://127.0.0.1:{settings.ports.worker_metrics}/metrics",
        "Temporal": settings.temporal.address,
    }
    if simulator:
        info["Provider simulator"] = f"{embedded_url(settings)}  (simulated models sim-*)"
    info["Home"] = str(settings.home)
    return info


class Supervisor:
    """Owns the child processes of one stack (one ``$NEXUS_HOME``)."""

    def __init__(self, settings: Settings, reporter: Reporter, simulator: SimulatorPlan) -> None:
        self.settings = settings
        self.reporter = reporter
        self.simulator = simulator
        self.paths = StackPaths(settings.home)
        self.stop = threading.Event()
        self.components = self._components()

    # --- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Start, watch until signalled, stop. Raises :class:`cli.runtime.StackLocked`."""
        lock = acquire_lock(self.paths)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop.set())
        write_pid(self.paths, "supervisor", os.getpid())
        if not self.simulator.enabled:
            self.reporter.emit({"type": "note", "text": f"provider simulator off: {self.simulator.reason}"})
        try:
            self._reap_orphans()
            self._check_ports()
            admin_key = self._start_all()
        except StopRequested:
            log.info("stop requested during startup")
            self._stop_all()
            return 0
        except Exception as exc:
            log.error("startup failed: %s", exc)
            self.reporter.emit({"type": "error", "message": str(exc)})
            self._stop_all()
            return 1
        state = {
            "supervisor": os.getpid(),
            "ports": self.settings.ports.model_dump(),
            "task_queue": self.settings.temporal.task_queue,
            "namespace": self.settings.temporal.namespace,
            "simulator": {"enabled": self.simulator.enabled, "reason": self.simulator.reason},
            "info": stack_info(self.settings, self.simulator.enabled),
        }
        write_state(self.paths, state)
        log.info("stack ready (home %s)", self.paths.home)
        self.reporter.emit({"type": "ready", "admin_key": admin_key, "info": state["info"]})
        del admin_key
        code = self._watch()
        self._stop_all()
        lock.close()
        return code

    def _start_all(self) -> str | None:
        infra = [c for n, c in self.components.items() if n in ("postgres", "redis", "temporal", "simulator")]
        for comp in infra:
            self._spawn(comp)
        for comp in infra:
            self._await_ready(comp)
        self._step("database", "migrating the database", self._migrate)
        admin_key: str | None = self._step("bootstrap", "bootstrapping the platform tenant", self._bootstrap)
        apps = [self.components[n] for n in ("worker", "api")]
        for comp in apps:
            self._spawn(comp)
        for comp in apps:
            self._await_ready(comp)
        return admin_key

    def _step(self, name: str, text: str, fn: Callable[[], Any]) -> Any:
        if self.stop.is_set():
            raise StopRequested
        started = time.monotonic()
        self.reporter.emit({"type": "begin", "step": name, "text": text})
        result = fn()
        detail = {"database": "migrations at head", "bootstrap": "created tenant 'default' + owner key"}
        message = detail[name] if result or name != "bootstrap" else "already bootstrapped"
        self._done(name, message, started)
        return result

    def _done(self, name: str, detail: str, started: float) -> None:
        seconds = round(time.monotonic() - started, 2)
        log.info("%s: %s (%.2fs)", name, detail, seconds)
        self.reporter.emit({"type": "done", "step": name, "detail": detail, "seconds": seconds})

    def _migrate(self) -> None:
        from core.db.migrate import upgrade

        ensure_database(self.settings.ports.postgres)
        upgrade(self.settings.database.url)

    def _bootstrap(self) -> str | None:
        from core.bootstrap import bootstrap_admin
        from core.db.engine import make_engine, make_sessionmaker

        async def run() -> str | None:
            engine = make_engine(self.settings.database)
            try:
                return await bootstrap_admin(make_sessionmaker(engine), self.settings)
            finally:
                await engine.dispose()

        return asyncio.run(run())

    # --- children ----------------------------------------------------------------------------

    def _components(self) -> dict[str, Component]:
        s, paths = self.settings, self.paths
        home, p = s.home, s.ports
        env = child_env(s, simulator=self.simulator.enabled)

        def app(name: str, ready: Callable[[], bool], url: str) -> Callable[[], ServerSpec]:
            argv = [sys.executable, "-m", "cli.main", name]
            return lambda: ServerSpec(
                name=name, argv=argv, port=0, log=paths.log(name), env=env, ready=ready, url=url
            )

        queue, namespace = s.temporal.task_queue, s.temporal.namespace
        specs: dict[str, tuple[Callable[[], ServerSpec], float]] = {
            "postgres": (lambda: postgres_spec(home / "postgres", p.postgres, paths.log("postgres")), 60),
            "redis": (lambda: valkey_spec(home / "valkey", p.redis, paths.log("redis")), INFRA_TIMEOUT_S),
            "temporal": (
                lambda: temporal_spec(
                    home / "temporal" / "temporal.db", p.temporal, p.temporal_ui, paths.log("temporal")
                ),
                INFRA_TIMEOUT_S,
            ),
            "worker": (
                app(
                    "worker",
                    lambda: worker_ready(p.worker_metrics, p.temporal, queue, namespace),
                    f"queue {queue}",
                ),
                APP_TIMEOUT_S,
            ),
            "api": (app("api", lambda: api_ready(p.api), s.api.public_url), APP_TIMEOUT_S),
        }
        if self.simulator.enabled:
            plan = self.simulator
            specs["simulator"] = (
                lambda: simulator_spec(plan, p.simulator, paths.log("simulator"), env),
                INFRA_TIMEOUT_S,
            )
        specs = {name: specs[name] for name in COMPONENTS if name in specs}
        return {name: Component(name, make, timeout) for name, (make, timeout) in specs.items()}

    def _spawn(self, comp: Component) -> None:
        if self.stop.is_set():
            raise StopRequested
        comp.spec = comp.make_spec()
        self.reporter.emit({"type": "begin", "step": comp.name, "text": f"starting {comp.name}"})
        comp.proc = spawn_server(comp.spec)
        comp.started_at = time.monotonic()
        write_pid(self.paths, comp.name, comp.proc.pid)

    def _await_ready(self, comp: Component) -> None:
        assert comp.spec is not None
        assert comp.proc is not None
        deadline = comp.started_at + comp.timeout_s
        while not comp.spec.is_ready():
            if self.stop.is_set():
                raise StopRequested
            if comp.proc.poll() is not None:
                raise StartupFailed(
                    f"{comp.name} exited with code {comp.proc.returncode} while starting; see {comp.spec.log}"
                )
            if time.monotonic() > deadline:
                raise StartupFailed(
                    f"{comp.name} not healthy after {comp.timeout_s:.0f}s; see {comp.spec.log}"
                )
            self.stop.wait(0.1)
        where = comp.spec.url or f"127.0.0.1:{comp.spec.port}"
        self._done(comp.name, f"ready ({where})", comp.started_at)

    def _watch(self) -> int:
        """Poll children until a stop signal; restart the ones that die (bounded backoff)."""
        while not self.stop.wait(0.5):
            for name, comp in self.components.items():
                if comp.proc is None:
                    continue
                if comp.proc.poll() is None:
                    if comp.failures and time.monotonic() - comp.started_at > STABLE_AFTER_S:
                        comp.failures = 0
                    continue
                log.warning("%s (pid %s) exited with code %s", name, comp.proc.pid, comp.proc.returncode)
                self.reporter.emit(
                    {"type": "note", "text": f"{name} exited with code {comp.proc.returncode}; restarting"}
                )
                if not self._restart(comp):
                    log.error("%s keeps failing; stopping the stack", name)
                    return 1
        return 0

    def _restart(self, comp: Component) -> bool:
        while comp.failures < MAX_RESTARTS:
            comp.failures += 1
            delay = 2.0 ** (comp.failures - 1)
            log.warning(
                "restarting %s in %.0fs (attempt %d/%d)", comp.name, delay, comp.failures, MAX_RESTARTS
            )
            if self.stop.wait(delay):
                return True
            try:
                self._spawn(comp)
                self._await_ready(comp)
                return True
            except StopRequested:
                return True
            except Exception as exc:
                log.warning("restart of %s failed: %s", comp.name, exc)
                if comp.proc is not None:
                    stop_process(comp.proc)
        return False

    def _stop_all(self) -> None:
        for name in reversed(COMPONENTS):
            comp = self.components.get(name)
            if comp is not None and comp.proc is not None and comp.proc.poll() is None:
                self.reporter.emit({"type": "stopping", "step": name})
                log.info("stopping %s (pid %s)", name, comp.proc.pid)
                stop_process(comp.proc, timeout_s=20.0)
            clear_pid(self.paths, name)
        self.paths.state.unlink(missing_ok=True)
        clear_pid(self.paths, "supervisor")
        log.info("stack stopped")

    def _reap_orphans(self) -> None:
        """Stop children left behind by a supervisor that was killed (pid and start time match)."""
        for name in reversed(COMPONENTS):
            pid = read_pid(self.paths, name)
            if pid is None:
                clear_pid(self.paths, name)
                continue
            log.warning("stopping orphaned %s (pid %d) from a previous run", name, pid)
            terminate_group(pid)
            clear_pid(self.paths, name)

    def _check_ports(self) -> None:
        p = self.settings.ports
        flags = {
            "api": (p.api, "--api-port"),
            "temporal": (p.temporal, "--temporal-port"),
            "temporal_ui": (p.temporal_ui, "--ui-port"),
            "postgres": (p.postgres, "--postgres-port"),
            "redis": (p.redis, "--redis-port"),
            "worker_metrics": (p.worker_metrics, "--metrics-port"),
        }
        if self.simulator.enabled:
            flags["simulator"] = (p.simulator, "--simulator-port")
        for name, (port, flag) in flags.items():
            if port > 0 and port_open(port):
                raise StartupFailed(
                    f"port {port} ({name}) is already in use: pass {flag} or set NEXUS_PORTS__{name.upper()}"
                )
