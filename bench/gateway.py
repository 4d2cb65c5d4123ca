"""Gateway overhead: chat completions straight to the simulator, through NexusAI, through LiteLLM.

One run, one machine, the same upstream for everyone: the provider simulator with zero added
latency (``bench/gateway_scenario.yaml``), measured alone first.

1. ``direct``:  wrk -> simulator ``/v1/chat/completions`` (model ``gpt-4o-mini``);
2. ``nexus``:   wrk -> NexusAI API (one uvicorn process, embedded Postgres + Valkey + in-memory
   Temporal dev server, a developer key with a very high rate limit) -> simulator
   (model ``sim-openai/gpt-4o-mini``);
3. ``litellm``: wrk -> LiteLLM proxy (its own venv under ``bench/.work/``, installed on first use)
   -> simulator (model ``gpt-4o-mini`` = ``openai/gpt-4o-mini`` at the simulator's ``/v1``).

Non-streamed requests with ``wrk`` (``bench/gateway_wrk.lua``) at concurrency 1 (-t1 -c1) and 32
(-t2 -c32), a warm-up then a measured run each; then streaming time to first content chunk with
a sequential httpx client, the three targets interleaved. Targets: added p50 <= 1 ms at c=1 and
NexusAI >= 10x LiteLLM's throughput at c=32.

Each wrk run also reports the CPU time the server under test used per request (user + system
of its process tree, from /proc, over the measured run) and the 1-minute load average at its
end. On a shared machine latencies and throughput move with the load; CPU per request hardly
does, so it is the figure to compare across runs.

    python -m bench.gateway [--duration 10] [--warmup 3] [--ttft-n 200] [--profile]

``--profile`` also samples the API process with py-spy (installed into the LiteLLM venv) during
an extra c=32 run after the measurements, and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from cli.embedded import (
    ServerSpec,
    ensure_database,
    free_port,
    port_open,
    postgres_spec,
    start_server,
    stop_process,
    temporal_spec,
    valkey_spec,
    venv_bin,
)

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "gateway_scenario.yaml"
LUA = HERE / "gateway_wrk.lua"
WORK = HERE / ".work"
LITELLM_VENV = WORK / "litellm"
PROMPT = "Write one short sentence about benchmarks."
NEXUS_MODEL = "sim-openai/gpt-4o-mini"
UPSTREAM_MODEL = "gpt-4o-mini"
KEY_RPM = 10_000_000
TARGET_ADDED_P50_MS = 1.0
TARGET_THROUGHPUT_RATIO = 10.0


@dataclass
class Target:
    name: str
    base: str  # ".../v1"
    model: str
    key: str
    pid: int | None = None  # the server process whose CPU time is charged to this target

    @property
    def url(self) -> str:
        return f"{self.base}/chat/completions"

    def body(self, stream: bool = False) -> bytes:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 64,
        }
        if stream:
            payload["stream"] = True
        return orjson.dumps(payload)


@dataclass
class WrkResult:
    target: str
    conns: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + timeouts + non-2xx
    cpu_ms: float | None = None  # CPU time of the server's process tree per request
    load1: float = 0.0  # 1-minute load average at the end of the run


# --------------------------------------------------------------------------- processes


class Processes:
    """Every child this benchmark starts; all stopped (process groups) on exit, error or not."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, spec: ServerSpec, timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
        proc = start_server(spec, timeout_s)
        self.procs.append((spec.name, proc))
        return proc

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                stop_process(proc)
        self.procs.clear()


def _http_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_simulator(procs: Processes, root: Path) -> tuple[int, int]:
    """The simulator; returns (port, pid)."""
    port = free_port()
    argv = [sys.executable, "-m", "core.simulator", "--port", str(port), "--scenario", str(SCENARIO)]
    proc = procs.start(
        ServerSpec(
            name="simulator",
            argv=argv,
            port=port,
            log=root / "simulator.log",
            ready=lambda: _http_ready(f"http://127.0.0.1:{port}/health"),
        )
    )
    return port, proc.pid


async def _mint_key(settings: Any) -> str:
    from core.db.engine import make_engine, make_sessionmaker
    from core.identity import Role
    from core.keys_service import create_tenant, issue_key

    engine = make_engine(settings.database)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await create_tenant(session, tenant_id="bench", name="bench")
            _, full = await issue_key(
                session,
                tenant_id="bench",
                role=Role.developer,
                name="gateway-bench",
                scopes=None,
                expires_at=None,
                created_by="bench",
                pepper=settings.security.key_pepper.get_secret_value(),
                rate_limit_per_minute=KEY_RPM,
            )
    finally:
        await engine.dispose()
    return full


def start_nexus(procs: Processes, root: Path, sim_port: int) -> tuple[str, str, subprocess.Popen[bytes]]:
    """Embedded Postgres + Valkey + Temporal, migrations, a key, then the API; returns (url, key, proc)."""
    from core.config import PortsSettings, Settings
    from core.db.migrate import upgrade

    pg = postgres_spec(root / "pg", free_port(), root / "postgres.log")
    procs.start(pg)
    ensure_database(pg.port)
    upgrade(f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/nexus")
    redis = valkey_spec(root / "valkey", free_port(), root / "valkey.log")
    procs.start(redis)
    temporal = temporal_spec(None, free_port(), 0, root / "temporal.log")
    procs.start(temporal)

    home = root / "home"
    api_port = free_port()
    env = {
        "NEXUS_ENV": "dev",
        "NEXUS_HOME": str(home),
        "NEXUS_LOG_LEVEL": "WARNING",
        "NEXUS_PORTS__API": str(api_port),
        "NEXUS_PORTS__POSTGRES": str(pg.port),
        "NEXUS_PORTS__REDIS": str(redis.port),
        "NEXUS_PORTS__TEMPORAL": str(temporal.port),
        "NEXUS_PORTS__SIMULATOR": str(sim_port),
    }
    # Same home as the API process, so the same dev key pepper (home/secrets.json).
    settings = Settings(
        env="dev",
        home=home,
        ports=PortsSettings(postgres=pg.port, redis=redis.port, temporal=temporal.port, simulator=sim_port),
    )
    key = asyncio.run(_mint_key(settings))
    argv = [venv_bin("uvicorn"), "api.app:create_app", "--factory", "--host", "127.0.0.1"]
    argv += ["--port", str(api_port), "--no-access-log"]
    proc = procs.start(
        ServerSpec(
            name="nexus-api",
            argv=argv,
            port=api_port,
            log=root / "api.log",
            env=env,
            ready=lambda: _http_ready(f"http://127.0.0.1:{api_port}/healthz"),
        ),
        timeout_s=90,
    )
    return f"http://127.0.0.1:{api_port}/v1", key, proc


def ensure_litellm() -> str:
    """The LiteLLM venv (created and installed once, then reused); returns the installed version."""
    python = LITELLM_VENV / "bin" / "python"
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        print(f"installing litellm[proxy] into {LITELLM_VENV} (once; ~742 MB) ...", flush=True)
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["python3", "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
            check=True,
        )
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {api_base}
      api_key: sk-bench-upstream
litellm_settings:
  telemetry: false
  set_verbose: false
  json_logs: false
  turn_off_message_logging: true
  callbacks: []
  success_callback: []
  failure_callback: []
  cache: false
general_settings:
  master_key: {master_key}
  disable_spend_logs: true
  disable_error_logs: true
  background_health_checks: false
"""


def start_litellm(procs: Processes, root: Path, sim_port: int) -> tuple[str, str, int]:
    """The proxy with a master key (it refuses to start without one, and it is the fair peer of a
    NexusAI key: both authenticate every request); returns (url, key)."""
    master_key = f"sk-bench-{secrets.token_hex(16)}"
    cfg = root / "litellm.yaml"
    api_base = f"http://127.0.0.1:{sim_port}/v1"
    cfg.write_text(LITELLM_CONFIG.format(model=UPSTREAM_MODEL, api_base=api_base, master_key=master_key))
    port = free_port()
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "NO_DOCS": "True",
    }
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1"]
    argv += ["--port", str(port)]
    proc = procs.start(
        ServerSpec(
            name="litellm",
            argv=argv,
            port=port,
            log=root / "litellm.log",
            env=env,
            ready=lambda: port_open(port) and _http_ready(f"http://127.0.0.1:{port}/health/liveliness"),
        ),
        timeout_s=120,
    )
    return f"http://127.0.0.1:{port}/v1", master_key, proc.pid


# --------------------------------------------------------------------------- load


def check(target: Target) -> None:
    """One plain and one streamed request must succeed before anything is measured."""
    headers = {"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"}
    resp = httpx.post(target.url, content=target.body(), headers=headers, timeout=30)
    if resp.status_code != 200 or not resp.json()["choices"][0]["message"]["content"]:
        raise RuntimeError(f"{target.name}: {resp.status_code} {resp.text[:500]}")
    with httpx.stream("POST", target.url, content=target.body(True), headers=headers, timeout=30) as s:
        text = "".join(s.iter_text())
    if s.status_code != 200 or "[DONE]" not in text:
        raise RuntimeError(f"{target.name} (stream): {s.status_code} {text[:500]}")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (all threads)."""
    total, todo, tick = 0.0, [pid], os.sysconf("SC_CLK_TCK")
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            todo.extend(_children(current))
    return total


def wrk(target: Target, threads: int, conns: int, seconds: float) -> WrkResult:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "10s"]
    argv += ["-s", str(LUA), target.url]
    env = {**os.environ, "WRK_BODY": target.body().decode(), "WRK_KEY": target.key}
    cpu_before = tree_cpu_s(target.pid) if target.pid else 0.0
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu = tree_cpu_s(target.pid) - cpu_before if target.pid else None
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        target=target.name,
        conns=conns,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        errors=errors,
        cpu_ms=1000 * cpu / data["requests"] if cpu is not None and data["requests"] else None,
        load1=os.getloadavg()[0],
    )


def load(target: Target, duration: float, warmup: float) -> list[WrkResult]:
    results = []
    for threads, conns in ((1, 1), (2, 32)):
        wrk(target, threads, conns, warmup)
        result = wrk(target, threads, conns, duration)
        cpu = f"{result.cpu_ms:.3f}" if result.cpu_ms is not None else "-"
        print(
            f"  {target.name:<8} c={conns:<3} {result.rps:>9.0f} req/s  p50 {result.p50_ms:7.3f} ms  "
            f"p99 {result.p99_ms:7.3f} ms  cpu {cpu} ms/req  load {result.load1:.2f}  "
            f"({result.requests} requests, {result.errors} errors)",
            flush=True,
        )
        results.append(result)
    return results


def _ttft_once(client: httpx.Client, target: Target) -> float:
    headers = {"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"}
    body = target.body(stream=True)
    started = time.perf_counter()
    first: float | None = None
    with client.stream("POST", target.url, content=body, headers=headers) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if first is None and line.startswith("data: {"):
                chunk = orjson.loads(line[6:])
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{target.name}: stream without content")
    return first


def ttft(targets: list[Target], n: int, warmup: int = 10) -> dict[str, list[float]]:
    """Sequential streamed requests, the targets interleaved; seconds to the first content chunk."""
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    with httpx.Client(timeout=30, trust_env=False) as client:
        for i in range(warmup + n):
            for target in targets:
                value = _ttft_once(client, target)
                if i >= warmup:
                    samples[target.name].append(value)
    return samples


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- profile


FRAME_RE = re.compile(r"^(?P<fn>.*) \((?P<file>.*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    m = FRAME_RE.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m['fn']} ({path})"


# Where a gateway request spends the API process's CPU: (label, frame name prefix), inclusive.
HOT_PATH = (
    ("uvicorn -> endpoint (whole request)", "RequestResponseCycle.run_asgi "),
    ("  gateway fast path (api/gateway/fast.py)", "GatewayFastPath._chat "),
    ("    authenticate (in-memory key cache; Redis on a miss)", "authenticate (api/auth.py)"),
    ("    body validation (pydantic, from the JSON bytes)", "BaseModel.model_validate_json "),
    ("    OpenAI wire -> ChatRequest", "to_chat_request "),
    ("    cost estimate (token count)", "_chat_estimate "),
    ("    admission (Redis Lua)", "admit_call "),
    ("    upstream call: ProviderRegistry.chat", "ProviderRegistry.chat "),
    ("      aiohttp request", "ClientSession._request "),
    ("    finish_call (log record, metrics)", "finish_call "),
    ("    response JSON", "completion_json "),
    ("    sending the response", "Response.__call__ "),
    ("settlement batches (Settler)", "Settler._settle "),
    ("inference log flush (executemany insert)", "InferenceLogWriter.flush "),
    ("key cache invalidations", "LocalKeyCache._follow "),
    ("event loop itself (Runner.run self time, includes waiting)", "Runner.run "),
)
IDLE_LEAVES = ("Condition.wait ", "Event.wait ", "Queue.get ", "Thread.join ", "select ", "epoll")


def profile(api_pid: int, target: Target, seconds: float, out: Path, conns: int = 32) -> None:
    """py-spy the API process under load (c=32 by default) (after the measurements: sampling slows it down);
    print where its CPU goes along the hot path, and the top functions by self time."""
    py_spy = LITELLM_VENV / "bin" / "py-spy"
    if not py_spy.exists():
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    raw = out.with_suffix(".txt")
    spy = subprocess.Popen(
        [str(py_spy), "record", "-p", str(api_pid), "-d", f"{seconds:g}", "-r", "250"]
        + ["--format", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    result = wrk(target, min(2, conns), conns, seconds + 1)
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not raw.exists():
        print(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-800:]}")
        return
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        # Idle threads (anyio's worker threads waiting for work) are not CPU.
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            continue
        count = int(count_s)
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        print("py-spy recorded no samples")
        return
    rate = total / 250 / seconds
    print(
        f"\nprofile of the API process at c={conns} under py-spy ({result.rps:.0f} req/s while sampled, "
        f"{total} samples = {100 * rate:.0f}% of one core; raw stacks in {raw}):"
    )
    print("  hot path, inclusive share of the process's CPU samples:")
    for label, prefix in HOT_PATH:
        count = sum(c for name, c in inclusive.items() if name.startswith(prefix))
        if prefix == "Runner.run ":
            count = sum(c for name, c in own.items() if name.startswith(prefix))
        print(f"    {100 * count / total:5.1f}%  {label}")
    print("  self time (top 15):")
    for name, count in own.most_common(15):
        print(f"    {100 * count / total:5.1f}%  {name}")


# --------------------------------------------------------------------------- report


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split(" Copy")[
        0
    ]
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, {wrk_v.strip()}"
    )


def report(
    results: dict[tuple[str, int], WrkResult], ttfts: dict[str, list[float]], litellm_version: str
) -> dict[str, float]:
    figures: dict[str, float] = {}
    direct = {c: results[("direct", c)] for c in (1, 32)}
    print("\nnon-streamed chat completions (wrk):")
    print(
        f"  {'path':<8} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 ms':>8} {'+p99 ms':>8} {'cpu/req':>8} {'load1':>6} {'errors':>6}"
    )
    for (name, conns), r in results.items():
        d = direct[conns]
        added50, added99 = r.p50_ms - d.p50_ms, r.p99_ms - d.p99_ms
        figures[f"{name}_c{conns}_rps"] = r.rps
        figures[f"{name}_c{conns}_p50_ms"] = r.p50_ms
        figures[f"{name}_c{conns}_p99_ms"] = r.p99_ms
        if r.cpu_ms is not None:
            figures[f"{name}_c{conns}_cpu_ms"] = r.cpu_ms
        shown50 = "" if name == "direct" else f"{added50:+.3f}"
        shown99 = "" if name == "direct" else f"{added99:+.3f}"
        cpu = f"{r.cpu_ms:.3f}" if r.cpu_ms is not None else ""
        print(
            f"  {name:<8} {conns:>4} {r.rps:>9.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} "
            f"{shown50:>8} {shown99:>8} {cpu:>8} {r.load1:>6.2f} {r.errors:>6}"
        )
    print("\nstreaming, time to first content chunk (sequential httpx client):")
    base = statistics.median(ttfts["direct"])
    print(f"  {'path':<8} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8}")
    for name, values in ttfts.items():
        p50, p99 = statistics.median(values), pct(values, 0.99)
        figures[f"{name}_ttft_p50_ms"], figures[f"{name}_ttft_p99_ms"] = p50 * 1000, p99 * 1000
        extra = "" if name == "direct" else f"{(p50 - base) * 1000:+.3f}"
        print(f"  {name:<8} {len(values):>4} {p50 * 1000:>8.3f} {p99 * 1000:>8.3f} {extra:>8}")

    added = results[("nexus", 1)].p50_ms - direct[1].p50_ms
    ratio = results[("nexus", 32)].rps / results[("litellm", 32)].rps
    sim_vs_nexus = direct[32].rps / results[("nexus", 32)].rps
    figures.update(added_p50_c1_ms=added, throughput_ratio_c32=ratio, sim_over_nexus_c32=sim_vs_nexus)
    print(f"\nsimulator alone vs through NexusAI at c=32: {sim_vs_nexus:.1f}x the throughput")
    ok1 = "OK" if added <= TARGET_ADDED_P50_MS else "MISSED"
    ok2 = "OK" if ratio >= TARGET_THROUGHPUT_RATIO else "MISSED"
    print(f"NexusAI added p50 at c=1: {added:.3f} ms (target <= {TARGET_ADDED_P50_MS:g} ms): {ok1}")
    print(
        f"NexusAI / LiteLLM {litellm_version} throughput at c=32: {ratio:.1f}x "
        f"(target >= {TARGET_THROUGHPUT_RATIO:g}x): {ok2}"
    )
    nexus_cpu, litellm_cpu = results[("nexus", 32)].cpu_ms, results[("litellm", 32)].cpu_ms
    if nexus_cpu and litellm_cpu:
        figures["cpu_ratio_c32"] = litellm_cpu / nexus_cpu
        print(
            f"CPU per request at c=32: NexusAI {nexus_cpu:.3f} ms, LiteLLM {litellm_cpu:.3f} ms "
            f"({litellm_cpu / nexus_cpu:.1f}x less; load-insensitive complement of the ratio above)"
        )
    return figures


def lease_figures(nexus_base: str) -> dict[str, float]:
    """How many gateway calls were admitted from an admission lease (the API's /metrics)."""
    wanted = {
        "nexus_gateway_requests_total": "calls",
        "nexus_gateway_leased_calls_total": "leased_calls",
        "nexus_gateway_admission_leases_total": "leases",
    }
    found = dict.fromkeys(wanted.values(), 0.0)
    text = httpx.get(nexus_base.removesuffix("/v1") + "/metrics", timeout=10).text
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        metric = name.split("{", 1)[0]
        if metric in wanted:
            found[wanted[metric]] += float(value.rsplit(" ", 1)[-1])
    if found["calls"]:
        print(
            f"admission: {found['leased_calls']:.0f} of {found['calls']:.0f} NexusAI calls were admitted "
            f"from {found['leases']:.0f} leases (one Redis round trip each); the rest one by one"
        )
    return {f"nexus_{k}": v for k, v in found.items()}


def run(
    duration: float = 10.0,
    warmup: float = 3.0,
    ttft_n: int = 200,
    do_profile: bool = False,
    profile_conns: int = 32,
) -> dict[str, float]:
    if shutil.which("wrk") is None:
        print("wrk not found; trying: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
        if shutil.which("wrk") is None:
            raise SystemExit(
                "wrk is required (Debian package 'wrk') and could not be installed; "
                "install it with `apt-get install -y wrk` (as root) and run again."
            )
    litellm_version = ensure_litellm()
    print(f"machine: {machine()}; LiteLLM {litellm_version}", flush=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} (other work on the machine skews the figures)")
    root = Path(tempfile.mkdtemp(prefix="nexus-bench-gw-"))
    procs = Processes()
    results: dict[tuple[str, int], WrkResult] = {}
    try:
        sim_port, sim_pid = start_simulator(procs, root)
        direct = Target(
            "direct", f"http://127.0.0.1:{sim_port}/v1", UPSTREAM_MODEL, "sk-bench-direct", sim_pid
        )
        check(direct)
        print(f"simulator alone ({duration:g} s per run after a {warmup:g} s warm-up):", flush=True)
        for r in load(direct, duration, warmup):
            results[(r.target, r.conns)] = r

        nexus_url, key, api_proc = start_nexus(procs, root, sim_port)
        nexus = Target("nexus", nexus_url, NEXUS_MODEL, key, api_proc.pid)
        litellm_url, litellm_key, litellm_pid = start_litellm(procs, root, sim_port)
        litellm = Target("litellm", litellm_url, UPSTREAM_MODEL, litellm_key, litellm_pid)
        for target in (nexus, litellm):
            check(target)
            for r in load(target, duration, warmup):
                results[(r.target, r.conns)] = r
        print(f"streaming TTFT: {ttft_n} sequential requests per path (+10 warm-up), interleaved", flush=True)
        ttfts = ttft([direct, nexus, litellm], ttft_n)
        figures = report(results, ttfts, litellm_version)
        figures.update(lease_figures(nexus_url))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        if do_profile:
            profile(api_proc.pid, nexus, duration, WORK / "gateway_profile", profile_conns)
        return figures
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per measured wrk run.")
    parser.add_argument("--warmup", type=float, default=3.0, help="Seconds of wrk warm-up before each.")
    parser.add_argument("--ttft-n", type=int, default=200, help="Streamed requests per path.")
    parser.add_argument("--profile", action="store_true", help="py-spy the API under c=32 afterwards.")
    parser.add_argument(
        "--profile-conns", type=int, default=32, help="wrk connections while profiling (1 or 32)."
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _sigterm)
    run(args.duration, args.warmup, args.ttft_n, args.profile, args.profile_conns)


if __name__ == "__main__":
    main()
