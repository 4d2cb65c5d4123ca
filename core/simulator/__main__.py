"""``python -m core.simulator --host H --port P --scenario FILE``."""

from __future__ import annotations

import argparse
import logging

from core.simulator.app import serve


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the simulator until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m core.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (default 8090)")
    parser.add_argument("--scenario", default=None, help="scenario YAML file (default: built-in)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.host, args.port, args.scenario)


if __name__ == "__main__":
    main()
