"""Provider simulator: a local server speaking the OpenAI, Anthropic and Gemini wire protocols.

See ``docs/simulator.md``. Entry points: :func:`create_app` (ASGI), :func:`serve` (uvicorn)
and ``python -m core.simulator --port P --scenario FILE``.
"""

from core.simulator.app import SimulatorApp, create_app, serve
from core.simulator.scenario import Scenario, load_scenario, parse_scenario

__all__ = ["Scenario", "SimulatorApp", "create_app", "load_scenario", "parse_scenario", "serve"]
