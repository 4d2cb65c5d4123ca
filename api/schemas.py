"""Shared request/response schema bits. Request schemas forbid unknown fields."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class StrictModel(BaseModel):
    """Base for request bodies: unknown fields are a 422, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None
