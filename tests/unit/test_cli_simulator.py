"""``nexus up`` and the provider simulator: the "auto" decision and how the stack is wired to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli.control import status_rows
from cli.runtime import StackPaths, write_state
from cli.simulator import REAL_PROVIDER_KEYS, default_scenario, plan_simulator
from cli.stack import Supervisor, child_env, stack_info
from core.config import Settings
from core.simulator import load_scenario


@pytest.fixture(autouse=True)
def _no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own keys or simulator URL must not leak into these settings."""
    for name in REAL_PROVIDER_KEYS:
        monkeypatch.delenv(f"NEXUS_PROVIDERS__{name.upper()}_API_KEY", raising=False)
    for var in ("NEXUS_PROVIDERS__SIMULATOR_URL", "NEXUS_PROVIDERS__API_KEYS", "NEXUS_PORTS__SIMULATOR"):
        monkeypatch.delenv(var, raising=False)


def make_settings(home: Path, **providers: Any) -> Settings:
    return Settings(
        _env_file=None,
        home=home,
        ports={"simulator": 18123},
        providers=providers,
    )


def test_auto_starts_the_simulator_without_provider_keys(tmp_path: Path) -> None:
    plan = plan_simulator(make_settings(tmp_path), None)
    assert plan.enabled
    assert not plan.forced
    assert plan.reason == "no provider API key configured"


@pytest.mark.parametrize("name", REAL_PROVIDER_KEYS)
def test_auto_leaves_it_off_when_a_provider_key_is_set(tmp_path: Path, name: str) -> None:
    plan = plan_simulator(make_settings(tmp_path, **{f"{name}_api_key": "k-123"}), None)
    assert not plan.enabled
    assert plan.reason == f"provider API keys configured ({name})"


def test_an_empty_key_does_not_count(tmp_path: Path) -> None:
    assert plan_simulator(make_settings(tmp_path, openai_api_key=""), None).enabled


def test_auto_leaves_it_off_when_the_operator_points_elsewhere(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, simulator_url="http://sim.internal:9000")
    plan = plan_simulator(settings, None)
    assert not plan.enabled
    assert "http://sim.internal:9000" in plan.reason


def test_flags_win_over_auto(tmp_path: Path) -> None:
    with_key = make_settings(tmp_path, anthropic_api_key="k-123")
    forced_on = plan_simulator(with_key, True)
    assert (forced_on.enabled, forced_on.forced) == (True, True)
    forced_off = plan_simulator(make_settings(tmp_path), False)
    assert (forced_off.enabled, forced_off.forced) == (False, True)


def test_the_packaged_default_scenario_loads() -> None:
    path = default_scenario()
    assert path.is_file()
    assert "gpt-4o-mini" in load_scenario(path).models


def test_supervisor_runs_it_with_the_infrastructure_and_points_the_apps_at_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    on = Supervisor(settings, reporter=None, simulator=plan_simulator(settings, None))  # type: ignore[arg-type]
    assert list(on.components) == ["postgres", "redis", "temporal", "simulator", "worker", "api"]
    spec = on.components["simulator"].make_spec()
    assert spec.argv[-6:] == ["--host", "127.0.0.1", "--port", "18123", "--scenario", str(default_scenario())]
    assert spec.log == tmp_path / "logs" / "simulator.log"
    for app in ("worker", "api"):
        env = on.components[app].make_spec().env
        assert env["NEXUS_PROVIDERS__SIMULATOR_URL"] == "http://127.0.0.1:18123"
        assert env["NEXUS_PORTS__SIMULATOR"] == "18123"
    assert stack_info(settings, True)["Provider simulator"] == (
        "http://127.0.0.1:18123  (simulated models sim-*)"
    )

    off = Supervisor(settings, reporter=None, simulator=plan_simulator(settings, False))  # type: ignore[arg-type]
    assert "simulator" not in off.components
    assert "NEXUS_PROVIDERS__SIMULATOR_URL" not in off.components["api"].make_spec().env
    assert "Provider simulator" not in stack_info(settings, False)
    assert "NEXUS_PROVIDERS__SIMULATOR_URL" not in child_env(settings)


def test_status_shows_a_simulator_left_off_as_off_not_down(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    state = {
        "ports": settings.ports.model_dump(),
        "task_queue": "q",
        "simulator": {"enabled": False, "reason": "provider API keys configured (openai)"},
        "info": {},
    }
    write_state(StackPaths(settings.home), state)
    rows = {row["component"]: row for row in status_rows(settings)}
    assert rows["simulator"]["enabled"] is False
    assert rows["simulator"]["url"] == "not started: provider API keys configured (openai)"
    assert rows["api"]["enabled"] is True  # nothing runs here: the others are down, and count

    state["simulator"] = {"enabled": True, "reason": "no provider API key configured"}
    write_state(StackPaths(settings.home), state)
    rows = {row["component"]: row for row in status_rows(settings)}
    assert rows["simulator"]["enabled"] is True
    assert rows["simulator"]["url"] == "http://127.0.0.1:18123"
