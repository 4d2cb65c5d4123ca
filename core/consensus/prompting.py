"""Shared prompt pieces: candidates as delimited, anonymous data blocks; JSON verdict extraction."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from core.consensus.vote import Ballot

MAX_CANDIDATE_CHARS = 6000
_OUR_TAGS = re.compile(r"<(/?\s*(?:candidate|task)\b)", re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)


def quote_block(text: str, max_chars: int = MAX_CANDIDATE_CHARS) -> str:
    """Text made safe to place between our tags: our tag names escaped, long text truncated."""
    text = text.strip()
    if len(text) > max_chars:
        text = text[:max_chars] + " [...truncated]"
    return _OUR_TAGS.sub(r"&lt;\1", text)


def task_block(task: str) -> str:
    """The task inside ``<task>`` tags."""
    return f"<task>\n{quote_block(task)}\n</task>"


def candidate_blocks(ballots: Sequence[Ballot], max_chars: int = MAX_CANDIDATE_CHARS) -> str:
    """Candidates numbered from 1, without model names (a judge should not know who wrote what)."""
    return "\n\n".join(
        f'<candidate id="{k}">\n{quote_block(b.text, max_chars)}\n</candidate>'
        for k, b in enumerate(ballots, start=1)
    )


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in a model's reply: the whole reply, a fenced block, or the first object."""
    stripped = text.strip()
    attempts = [stripped, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for attempt in attempts:
        try:
            value = json.loads(attempt)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None
