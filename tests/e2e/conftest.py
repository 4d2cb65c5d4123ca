"""End-to-end fixtures: the workflow tests' Temporal client, worker, task queue and tenant."""

from tests.workflows.conftest import redis_client, task_queue, temporal_client, tenant, worker

__all__ = ["redis_client", "task_queue", "temporal_client", "tenant", "worker"]
