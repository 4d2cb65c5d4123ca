"""The provider simulator in the embedded stack (``nexus up``) and on its own (``nexus simulate``).

``nexus up`` starts it as a supervised component when no real provider API key is configured
("auto"), so the catalog's ``sim-*`` models answer out of the box and offline;
``--simulator/--no-simulator`` forces the choice either way. See ``docs/simulator.md``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cli.embedded import ServerSpec
from cli.runtime import simulator_ready
from core.config import Settings

# Keys of the real upstream providers: any one of them set means "use real models".
REAL_PROVIDER_KEYS = ("openai", "anthropic", "gemini", "mistral", "deepseek", "meta")


def default_scenario() -> Path:
    """The packaged default scenario (the upstream names of the catalog's ``sim-*`` models)."""
    return Path(str(resources.files("core.simulator").joinpath("scenarios", "default.yaml")))


def embedded_url(settings: Settings) -> str:
    """Where the embedded simulator listens: ``http://127.0.0.1:<ports.simulator>``."""
    return f"http://127.0.0.1:{settings.ports.simulator}"


def configured_provider_keys(settings: Settings) -> list[str]:
    """Names of the real providers whose API key is set (non-empty)."""
    return [name for name in REAL_PROVIDER_KEYS if settings.providers.api_key(name) is not None]


@dataclass(frozen=True)
class SimulatorPlan:
    """Whether ``nexus up`` runs the simulator, why, and with which scenario."""

    enabled: bool
    reason: str
    scenario: Path | None = None
    forced: bool = False  # by --simulator / --no-simulator rather than decided automatically

    @property
    def scenario_path(self) -> Path:
        return self.scenario or default_scenario()


def plan_simulator(settings: Settings, choice: bool | None, scenario: Path | None = None) -> SimulatorPlan:
    """Decide for ``nexus up``: ``choice`` is ``--simulator`` (True), ``--no-simulator`` (False) or auto.

    Auto starts it when no real provider key is configured, unless
    ``NEXUS_PROVIDERS__SIMULATOR_URL`` points somewhere other than the embedded port (the
    operator runs a simulator of their own there).
    """
    if choice is not None:
        return SimulatorPlan(choice, "--simulator" if choice else "--no-simulator", scenario, forced=True)
    keys = configured_provider_keys(settings)
    if keys:
        return SimulatorPlan(False, f"provider API keys configured ({', '.join(keys)})", scenario)
    url = settings.providers.simulator_url.rstrip("/")
    if url != embedded_url(settings):
        return SimulatorPlan(False, f"NEXUS_PROVIDERS__SIMULATOR_URL is {url}", scenario)
    return SimulatorPlan(True, "no provider API key configured", scenario)


def simulator_argv(port: int, scenario: Path, host: str = "127.0.0.1") -> list[str]:
    """The ``nexus simulate`` command line, run with this interpreter."""
    argv = [sys.executable, "-m", "cli.main", "simulate", "--host", host, "--port", str(port)]
    return [*argv, "--scenario", str(scenario)]


def simulator_spec(plan: SimulatorPlan, port: int, log: Path, env: dict[str, str]) -> ServerSpec:
    """The supervised simulator child: healthy once ``GET /health`` answers 200."""
    return ServerSpec(
        name="simulator",
        argv=simulator_argv(port, plan.scenario_path),
        port=port,
        log=log,
        env=env,
        ready=lambda: simulator_ready(port),
        url=f"http://127.0.0.1:{port}",
    )


def run_simulator(host: str, port: int, scenario: Path | None) -> None:
    """Serve the simulator in the foreground until interrupted (``nexus simulate``)."""
    import logging

    from core.simulator import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(host, port, scenario or default_scenario())
