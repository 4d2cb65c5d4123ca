"""Pipelines: versioned definitions of steps run as one durable workflow with saga compensations."""
