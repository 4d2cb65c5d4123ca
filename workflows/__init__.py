"""Temporal workflow definitions: deterministic only, no I/O."""
