"""Temporal wiring shared by the API and the workers: client, data converter, payload codec."""
