"""Structured JSON logs (python-json-logger) with request ids; secrets never logged."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from core.config import Settings


def configure_logging(settings: Settings) -> None:
    """Configure the root logger once per process."""
    root = logging.getLogger()
    if getattr(root, "_nexus_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    root._nexus_configured = True  # type: ignore[attr-defined]
