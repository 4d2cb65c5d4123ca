"""Clients and plumbing shared by the connector activities: the connection and its decrypted
credentials, a small cache of connectors, the bridge from blocking activities to the worker's
event loop, and the mapping of connector errors to Temporal failures.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, TypeVar

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.pipeline_steps import PipelineActivities
from connectors import registry
from connectors.base import Connector, ConnectorError
from connectors.store import ConnectionRepository, CredentialCipher, build_connector
from core.config import Settings
from core.db.connector_models import Connection
from core.errors import NexusError

T = TypeVar("T")
_CACHE_SIZE = 32


def connector_failure(exc: ConnectorError) -> ApplicationError:
    """A connector error as a Temporal failure: retryable by kind, ``Retry-After`` honoured."""
    delay = dt.timedelta(seconds=exc.retry_after) if exc.retry_after else None
    return ApplicationError(
        exc.message,
        type=f"connector_{exc.kind.value}",
        non_retryable=not exc.retryable,
        next_retry_delay=delay if exc.retryable else None,
    )


def fatal(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


class ConnectorActivitiesBase:
    """The worker's database, Redis, settings and Temporal client, and the connector plumbing."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        settings: Settings,
        pipelines: PipelineActivities | None = None,
        temporal: Client | None = None,
    ) -> None:
        self.sessions = sessions
        self.redis = redis
        self.settings = settings
        self.temporal = temporal
        self.section = settings.connectors
        self.cipher = CredentialCipher.from_settings(settings)
        self.pipelines = pipelines or PipelineActivities(sessions, redis, settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cache: OrderedDict[tuple[str, str, str], Connector] = OrderedDict()

    def bind_loop(self) -> None:
        """Remember the worker's event loop (blocking activities submit database work to it)."""
        self._loop = asyncio.get_running_loop()

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise fatal("blocking connector activities need bind_loop() at worker start", "ConnectorConfig")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _connection(self, tenant_id: str, id_or_name: str) -> tuple[Connection, dict[str, Any]]:
        async with self.sessions() as session:
            repo = ConnectionRepository(session, self.cipher)
            try:
                row = await repo.get(tenant_id, id_or_name)
                return row, repo.credentials(row)
            except NexusError as exc:
                raise fatal(exc.detail, "ConnectionUnavailable") from None

    def _connector(self, row: Connection, credentials: dict[str, Any]) -> Connector:
        """A connector for the connection (async ones are reused while the row is unchanged)."""
        try:
            if registry.get(row.type).blocking:
                return build_connector(row, credentials, self.section)
            key = (row.tenant_id, row.id, row.updated_at.isoformat())
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            connector = build_connector(row, credentials, self.section)
        except ConnectorError as exc:
            raise connector_failure(exc) from None
        self._cache[key] = connector
        while len(self._cache) > _CACHE_SIZE:
            _, old = self._cache.popitem(last=False)
            asyncio.ensure_future(old.close())
        return connector

    async def aclose(self) -> None:
        """Close the cached connectors (worker shutdown)."""
        while self._cache:
            _, old = self._cache.popitem()
            await old.close()
