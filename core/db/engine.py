"""Engine and session factory. One transaction per request or activity, committed at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from core.config import DatabaseSettings


def make_engine(settings: DatabaseSettings) -> AsyncEngine:
    """Create the async engine for ``settings.url``."""
    return create_async_engine(
        settings.url, pool_size=settings.pool_size, pool_pre_ping=True, echo=settings.echo
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory; objects stay usable after commit (no implicit reloads in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """Open a session, commit on success, roll back on any error."""
    async with sessions() as session, session.begin():
        yield session
