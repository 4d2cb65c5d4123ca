"""Workflow test fixtures: a real Temporal client, a real worker on a fresh task queue per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from core.config import Settings
from core.db.models import Tenant
from core.temporal.client import connect
from workers.main import build_worker


@pytest_asyncio.fixture(scope="session")
async def temporal_client(settings: Settings) -> Client:
    return await connect(settings)


@pytest_asyncio.fixture
async def redis_client(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis.url)
    yield client
    await client.aclose()


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def tenant(sessions: async_sessionmaker[AsyncSession], tenant_id: str) -> str:
    """A fresh tenant row (runs reference tenants)."""
    async with sessions() as session, session.begin():
        await session.execute(insert(Tenant).values(id=tenant_id, name=tenant_id).on_conflict_do_nothing())
    return tenant_id


@pytest_asyncio.fixture
async def worker(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    task_queue: str,
) -> AsyncIterator[Worker]:
    """The production worker wiring (``workers.main.build_worker``) on this test's queue."""
    w = build_worker(temporal_client, settings, sessions, redis_client, task_queue)
    async with w:
        yield w
