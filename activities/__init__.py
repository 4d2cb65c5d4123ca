"""Temporal activities: thin adapters over ``core`` with injected clients."""
