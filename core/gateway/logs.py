"""Inference logs: a background batch writer off the hot path, the list query and the live tail.

:class:`InferenceLogWriter` never blocks a request: :meth:`~InferenceLogWriter.enqueue` puts a
record on a bounded queue (when full, the *oldest* record is dropped and counted in
``nexus_inference_logs_dropped_total``); a background task writes batches with one multi-row
``INSERT … ON CONFLICT (request_id) DO NOTHING`` every ``batch_size`` records or
``flush_interval_s``, retries failed writes with exponential backoff, then publishes each
record (without content) on ``nexus:inference:{tenant_id}`` for the live tail.

Content (prompt and answer) is stored only when the caller sets ``record.content``, which it
must do only for tenants whose ``settings["log_content"]`` is true (:func:`content_logging`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Literal

import orjson
from redis.asyncio import Redis
from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.gateway_models import InferenceLog
from core.errors import BadRequest
from core.gateway.metrics import LOGS_DROPPED, LOGS_FAILED, LOGS_WRITTEN

log = logging.getLogger("nexus.gateway.logs")

# asyncpg takes at most 32767 bind parameters per statement; a row has 20 columns.
MAX_BATCH = 1500


def channel(tenant_id: str) -> str:
    """Redis pub/sub channel of one tenant's live inference tail."""
    return f"nexus:inference:{tenant_id}"


def content_logging(tenant_settings: Mapping[str, Any] | None) -> bool:
    """Whether a tenant enabled logging prompts and answers (``settings["log_content"] is True``)."""
    return tenant_settings is not None and tenant_settings.get("log_content") is True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class InferenceRecord:
    """One gateway call. Set ``created_at`` to the admission time so logs and budgets agree on the month."""

    tenant_id: str
    request_id: str
    model: str
    provider: str
    status: Literal["ok", "error"] = "ok"
    key_id: uuid.UUID | None = None
    route_group: str | None = None
    error_code: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    stream: bool = False
    cache_hit: bool = False
    created_at: dt.datetime = field(default_factory=_now)
    content: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        """Column values for the INSERT (SQL NULL, not JSON null, when there is no content)."""
        # The column is JSONB(none_as_null=True): None is stored as SQL NULL.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def public(self) -> dict[str, Any]:
        """The record as JSON-ready data without its content (what the live tail shows)."""
        return {
            "request_id": self.request_id,
            "key_id": str(self.key_id) if self.key_id else None,
            "model": self.model,
            "provider": self.provider,
            "route_group": self.route_group,
            "status": self.status,
            "error_code": self.error_code,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": str(self.cost_usd),
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "stream": self.stream,
            "cache_hit": self.cache_hit,
            "created_at": self.created_at.astimezone(dt.UTC).isoformat(),
        }


_INSERT = insert(InferenceLog).on_conflict_do_nothing(index_elements=["request_id"])


class InferenceLogWriter:
    """Batches inference records into Postgres from a background task; see the module docstring."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis | None = None,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        max_attempts: int = 5,
        backoff_s: float = 0.1,
    ) -> None:
        self._sessions = sessions
        self._redis = redis
        self._queue: asyncio.Queue[InferenceRecord] = asyncio.Queue(maxsize=max_queue)
        self._batch_size = max(1, min(batch_size, MAX_BATCH))
        self._interval = flush_interval_s
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff_s
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0
        self.failed = 0
        self.written = 0

    def start(self) -> None:
        """Start the background flusher (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="inference-log-writer")

    async def __aenter__(self) -> InferenceLogWriter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def enqueue(self, record: InferenceRecord) -> None:
        """Queue a record without blocking; when the queue is full the oldest one is dropped."""
        if self._closed:
            self._drop()
            log.warning("inference log record after writer shutdown dropped")
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._queue.get_nowait()
            self._drop()
            self._queue.put_nowait(record)
        if self._queue.qsize() >= self._batch_size:
            self._wake.set()

    def _drop(self) -> None:
        self.dropped += 1
        LOGS_DROPPED.inc()

    @property
    def pending(self) -> int:
        """Records waiting to be written."""
        return self._queue.qsize()

    async def flush(self) -> None:
        """Write everything queued so far (the background task does this by itself)."""
        async with self._lock:
            while not self._queue.empty():
                batch = [self._queue.get_nowait() for _ in range(min(self._batch_size, self._queue.qsize()))]
                await self._write(batch)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Stop accepting records and drain the queue (bounded by ``timeout_s``)."""
        self._closed = True
        self._wake.set()
        task, self._task = self._task, None
        try:
            async with asyncio.timeout(timeout_s):
                if task is not None:
                    await task  # the loop sees _closed, flushes what is queued and returns
                await self.flush()
        except TimeoutError:
            lost = self._queue.qsize()
            self.failed += lost
            LOGS_FAILED.inc(lost)
            log.error("inference log writer closed with %d records unwritten", lost)

    async def _run(self) -> None:
        while not self._closed:
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the flusher must outlive any bug in one batch
                log.exception("inference log flush failed")

    async def _write(self, batch: list[InferenceRecord]) -> None:
        rows = [record.row() for record in batch]
        for attempt in range(self._max_attempts):
            try:
                async with self._sessions() as session, session.begin():
                    # One cached statement, executemany (batched VALUES by the driver dialect).
                    await session.execute(_INSERT, rows)
                break
            except Exception as exc:
                if attempt + 1 == self._max_attempts:
                    self.failed += len(batch)
                    LOGS_FAILED.inc(len(batch))
                    log.error(
                        "dropping %d inference log records after %d attempts: %s",
                        len(batch),
                        attempt + 1,
                        type(exc).__name__,
                    )
                    return
                await asyncio.sleep(self._backoff * 2**attempt)
        self.written += len(batch)
        LOGS_WRITTEN.inc(len(batch))
        await self._publish(batch)

    async def _publish(self, batch: Sequence[InferenceRecord]) -> None:
        if self._redis is None:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for record in batch:
                    pipe.publish(channel(record.tenant_id), orjson.dumps(record.public()))
                await pipe.execute()
        except Exception:  # the live tail is best effort; the rows are stored
            log.warning("publishing inference records failed", exc_info=True)


@dataclass(frozen=True)
class LogFilters:
    """Optional filters of :func:`list_logs` (all combined with AND)."""

    model: str | None = None
    status: Literal["ok", "error"] | None = None
    key_id: uuid.UUID | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


@dataclass(frozen=True)
class LogPage:
    """One page of logs, newest first; ``next_cursor`` (JSON-ready list) when there is more."""

    data: list[dict[str, Any]]
    next_cursor: list[Any] | None


def serialize(row: InferenceLog, *, include_content: bool = False) -> dict[str, Any]:
    """A stored log row as JSON-ready data; content only when asked for and present."""
    out: dict[str, Any] = {
        "id": row.id,
        "request_id": row.request_id,
        "key_id": str(row.key_id) if row.key_id else None,
        "model": row.model,
        "provider": row.provider,
        "route_group": row.route_group,
        "status": row.status,
        "error_code": row.error_code,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cached_tokens": row.cached_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "cost_usd": str(row.cost_usd),
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "stream": row.stream,
        "cache_hit": row.cache_hit,
        "created_at": row.created_at.astimezone(dt.UTC).isoformat(),
    }
    if include_content:
        out["content"] = row.content
    return out


def _parse_cursor(cursor: Sequence[Any]) -> tuple[dt.datetime, int]:
    try:
        created, row_id = cursor
        moment = dt.datetime.fromisoformat(str(created))
        if moment.tzinfo is None or isinstance(row_id, bool):
            raise ValueError("naive cursor time")
        return moment, int(row_id)
    except (TypeError, ValueError) as exc:
        raise BadRequest("invalid cursor") from exc


async def list_logs(
    session: AsyncSession,
    tenant_id: str,
    filters: LogFilters | None = None,
    *,
    limit: int = 50,
    cursor: Sequence[Any] | None = None,
    include_content: bool = False,
) -> LogPage:
    """One tenant's logs, newest first, keyset-paginated on ``(created_at, id)``.

    ``cursor`` is a previous page's ``next_cursor`` (decode it with ``api.pagination``).
    """
    f = filters or LogFilters()
    query = select(InferenceLog).where(InferenceLog.tenant_id == tenant_id)
    if f.model is not None:
        query = query.where(InferenceLog.model == f.model)
    if f.status is not None:
        query = query.where(InferenceLog.status == f.status)
    if f.key_id is not None:
        query = query.where(InferenceLog.key_id == f.key_id)
    if f.since is not None:
        query = query.where(InferenceLog.created_at >= f.since)
    if f.until is not None:
        query = query.where(InferenceLog.created_at < f.until)
    if cursor is not None:
        created, row_id = _parse_cursor(cursor)
        query = query.where(tuple_(InferenceLog.created_at, InferenceLog.id) < tuple_(created, row_id))
    limit = max(1, min(limit, 1000))
    query = query.order_by(InferenceLog.created_at.desc(), InferenceLog.id.desc()).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = [rows[-1].created_at.isoformat(), rows[-1].id] if more and rows else None
    return LogPage([serialize(r, include_content=include_content) for r in rows], next_cursor)


async def tail(redis: Redis, tenant_id: str, *, idle_s: float = 15.0) -> AsyncIterator[dict[str, Any] | None]:
    """Follow one tenant's live inference records; yields None after ``idle_s`` without any.

    The None ticks let an SSE route send a keep-alive and notice a client that went away.
    Records are those published after subscribing (fetch history with :func:`list_logs`).
    """
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel(tenant_id))
    try:
        quiet_since = time.monotonic()
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=idle_s)
            if message is None:
                if time.monotonic() - quiet_since >= idle_s:
                    quiet_since = time.monotonic()
                    yield None
                continue
            try:
                body = orjson.loads(message["data"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("dropping malformed inference tail message")
                continue
            if isinstance(body, dict):
                quiet_since = time.monotonic()
                yield body
    finally:
        try:
            await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
        except Exception:  # closing a dead connection must not mask the stream's outcome
            log.debug("pubsub close failed", exc_info=True)
