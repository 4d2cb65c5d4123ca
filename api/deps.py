"""Typed dependencies: ``SessionDep``, ``PrincipalDep``, ``RedisDep``, ``TemporalDep``, ``StateDep``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from opentelemetry.trace import TracerProvider
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.config import Settings
from core.errors import Unavailable
from core.identity import Principal

if TYPE_CHECKING:
    from api.gateway.service import Gateway


@dataclass
class AppState:
    """Resources built once in the lifespan and shared by every request."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    temporal: Client | None  # None only while Temporal is unreachable at startup
    gateway: Gateway | None = None  # the model gateway (catalog, providers, log writer)
    tracer_provider: TracerProvider | None = None  # set only when tracing is enabled


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.nexus
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back on error.

    Cache evictions a route scheduled (key revocations) run once the commit succeeded.
    """
    from core.keys_service import evict_key

    async with state.sessions() as session:
        async with session.begin():
            yield session
        for prefix in session.info.pop("evict_key_prefixes", []):
            await evict_key(state.redis, prefix)
            if state.gateway is not None and state.gateway.keys is not None:
                state.gateway.keys.discard(prefix)  # this process's copy (api.auth.LocalKeyCache)


# scope="function": commit (and post-commit evictions) happen before the response is sent,
# so a client that sees 2xx can rely on the change being durable and visible.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_redis(state: StateDep) -> Redis:
    return state.redis


RedisDep = Annotated[Redis, Depends(get_redis)]


async def get_temporal(state: StateDep) -> Client:
    if state.temporal is None:
        from core.temporal.client import connect

        try:
            state.temporal = await connect(state.settings, tracer_provider=state.tracer_provider)
        except Exception as exc:  # the reason is logged, not shown
            raise Unavailable("Temporal is not reachable") from exc
    return state.temporal


TemporalDep = Annotated[Client, Depends(get_temporal)]


async def get_principal(request: Request, state: StateDep) -> Principal:
    from api.auth import authenticate

    return await authenticate(request, state)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
