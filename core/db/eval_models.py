"""Eval tables (placeholder; filled by the evals work)."""

from __future__ import annotations
