"""Opaque cursors for keyset pagination (``?limit=&cursor=``)."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import Query

from core.errors import BadRequest

LimitQuery = Annotated[int, Query(ge=1, le=200, description="Page size")]
CursorQuery = Annotated[str | None, Query(max_length=500, description="Cursor from a previous page")]


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode()


def decode_cursor(cursor: str | None) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("invalid cursor") from exc
    if not isinstance(values, list):
        raise BadRequest("invalid cursor")
    return values
