"""Connector tables (placeholder; filled by the connectors work)."""

from __future__ import annotations
