"""docs/configuration.md lists every setting (regenerate with the command in that file)."""

from __future__ import annotations

from pathlib import Path

from core.config import settings_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_reference_is_current() -> None:
    assert settings_reference() in DOC.read_text(), (
        "docs/configuration.md is stale: run "
        "`.venv/bin/python -c 'from core.config import settings_reference as r; print(r())'` "
        "and paste the table"
    )
