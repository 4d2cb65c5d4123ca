"""Strict parsing of JSON replies from LLM judges.

A judge reply counts only if it is a JSON object, either the whole reply or the whole content of
one Markdown code fence (models add fences even in JSON mode). Prose around JSON, several objects,
or a JSON value of the wrong type is rejected: an answer we cannot read is an error, never a pass.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(?P<body>.*?)\n?```$", re.DOTALL)
MAX_EXCERPT = 200


class ReplyError(ValueError):
    """The reply is not the JSON the prompt asked for."""


def excerpt(text: str) -> str:
    """A short, single-line excerpt of a reply for error messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_EXCERPT else flat[: MAX_EXCERPT - 1] + "…"


def unfence(text: str) -> str:
    """``text`` stripped, without one surrounding Markdown code fence if it has one."""
    body = text.strip()
    fenced = _FENCE.match(body)
    return fenced.group("body").strip() if fenced else body


def parse_object(text: str) -> dict[str, Any]:
    """The JSON object in ``text`` (whole reply or one fenced block); :class:`ReplyError` otherwise."""
    body = unfence(text)
    if not body:
        raise ReplyError("empty reply")
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError):
        raise ReplyError(f"not JSON: {excerpt(text)!r}") from None
    if not isinstance(value, dict):
        raise ReplyError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def integer_field(obj: dict[str, Any], key: str, *, low: int, high: int) -> int:
    """``obj[key]`` as an int in [low, high]; integral floats (4.0) are accepted, bools and strings not."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReplyError(f"{key!r} must be an integer, got {excerpt(json.dumps(value))}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise ReplyError(f"{key!r} must be an integer, got {value}")
    number = int(value)
    if not low <= number <= high:
        raise ReplyError(f"{key!r} = {number} is outside {low}..{high}")
    return number


def string_field(obj: dict[str, Any], key: str, *, required: bool = True) -> str:
    """``obj[key]`` as a string (missing allowed only when not required)."""
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ReplyError(f"{key!r} must be a string")
    return value


def list_field(obj: dict[str, Any], key: str) -> list[Any]:
    """``obj[key]`` as a list."""
    value = obj.get(key)
    if not isinstance(value, list):
        raise ReplyError(f"{key!r} must be a list")
    return value


def binary_verdict(value: Any, key: str = "verdict") -> int:
    """A 0/1 verdict; accepts 0, 1, true, false (and 0.0 / 1.0)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    raise ReplyError(f"{key!r} must be 0 or 1, got {excerpt(json.dumps(value))}")
