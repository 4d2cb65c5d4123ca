"""Model calls as idempotent activities: each finished call is stored and billed exactly once.

``call_llm`` first looks its ``call_key`` up in ``model_calls``: a hit means a previous
attempt (possibly on a worker that was killed right after) already paid for the call, and the
stored answer is returned without calling the model again. Otherwise the model is called
through the :class:`~core.providers.ProviderRegistry` (zero internal retries: Temporal owns
retries) and the answer payload and the usage row are written in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.runs import require_own_workflow
from core.db.orchestration_models import ModelCall
from core.errors import NexusError
from core.orchestration.billing import ModelCallRepository
from core.orchestration.contracts import PayloadRef, Usage
from core.orchestration.steps import CallLlmInput, CallLlmResult, EmbedInput, EmbedResult
from core.payloads import PayloadStore
from core.providers import (
    Catalog,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    ErrorEvent,
    Message,
    ProviderError,
    ProviderRegistry,
    TextDelta,
    UsageEvent,
    cost_usd,
)
from core.providers.errors import ErrorKind
from core.providers.tokens import count_text
from core.providers.types import DoneEvent
from core.providers.types import Usage as ProviderUsage

HEARTBEAT_EVERY_S = 1.0
OnDelta = Callable[[str], Awaitable[None]]


def bad_input(message: str) -> ApplicationError:
    """A non-retryable failure caused by the activity's input."""
    return ApplicationError(message, non_retryable=True, type="BadInput")


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat while a long call runs, so a killed worker is noticed by heartbeat timeout."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    task = asyncio.create_task(beat()) if activity.in_activity() else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class LlmActivities:
    """``call_llm`` and ``embed_texts``, bound to the worker's provider registry and database."""

    def __init__(
        self,
        registry: ProviderRegistry,
        catalog: Catalog,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        store: PayloadStore | None = None,
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.sessions = sessions
        self.redis = redis
        self.store = store or PayloadStore()

    @activity.defn(name="call_llm")
    async def call_llm(self, inp: CallLlmInput) -> CallLlmResult:
        """One chat completion, billed once under ``call_key`` (a retry returns the stored answer)."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        messages = await self.load_messages(inp)
        return await self.billed_chat(
            tenant_id=inp.tenant_id,
            workflow_id=inp.workflow_id,
            call_key=inp.call_key,
            request=self.chat_request(inp.model, messages, inp),
        )

    @activity.defn(name="embed_texts")
    async def embed_texts(self, inp: EmbedInput) -> EmbedResult:
        """Embed stored texts (semantic consensus), billed once under ``call_key``."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self.sessions() as session:
            texts = await self.store.get_many(session, inp.tenant_id, inp.texts)
        return await self.billed_embed(
            tenant_id=inp.tenant_id,
            workflow_id=inp.workflow_id,
            call_key=inp.call_key,
            model=inp.model,
            texts=texts,
        )

    # --- the idempotent paths, shared with the orchestration activities -----------------

    def chat_request(
        self, model: str, messages: list[Message], inp: CallLlmInput | None = None
    ) -> ChatRequest:
        """A chat request for ``model`` with the call's sampling options."""
        return ChatRequest(
            model=model,
            messages=messages,
            max_tokens=inp.max_tokens if inp else None,
            temperature=inp.temperature if inp else None,
            response_format=inp.response_format if inp else None,
        )

    async def load_messages(self, inp: CallLlmInput) -> list[Message]:
        """The call's messages, inline or from the payload store."""
        if inp.messages:
            return inp.messages
        if inp.messages_ref is None:
            raise bad_input("call_llm needs messages or messages_ref")
        async with self.sessions() as session:
            raw = await self.store.get(session, inp.tenant_id, inp.messages_ref)
        return [Message.model_validate(m) for m in json.loads(raw)]

    async def stored_call(self, tenant_id: str, call_key: str) -> CallLlmResult | None:
        """The finished call under ``call_key``, if any."""
        async with self.sessions() as session:
            row = await ModelCallRepository.from_session(session).find(tenant_id, call_key)
            if row is None or not row.ok or row.payload_id is None:
                return None
            ref = await self.store.ref(session, tenant_id, row.payload_id)
        return _result_of(row, ref, replayed=True)

    async def billed_chat(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        call_key: str,
        request: ChatRequest,
        on_delta: OnDelta | None = None,
    ) -> CallLlmResult:
        """Return the stored answer of ``call_key`` or call the model once and store answer + usage."""
        result, _ = await self.billed_chat_text(
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            call_key=call_key,
            request=request,
            on_delta=on_delta,
        )
        return result

    async def billed_chat_text(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        call_key: str,
        request: ChatRequest,
        on_delta: OnDelta | None = None,
    ) -> tuple[CallLlmResult, str]:
        """:meth:`billed_chat` and the answer's text (read back only when another attempt stored it)."""
        stored = await self.stored_call(tenant_id, call_key)
        if stored is not None:
            async with self.sessions() as session:
                return stored, await self.store.get(session, tenant_id, stored.answer)
        try:
            model = self.catalog.get(request.model)
        except NexusError as exc:
            raise bad_input(exc.detail) from exc
        try:
            async with heartbeating():
                if on_delta is None:
                    response = await self.registry.chat(request)
                else:
                    response = await self._streamed(request, on_delta)
        except ProviderError as err:
            raise err.to_application_error() from err
        cost = cost_usd(response.usage, model.prices)
        async with self.sessions() as session, session.begin():
            ref = await self.store.put(
                session, tenant_id, response.content, idempotency_key=f"{call_key}:answer"
            )
            repo = ModelCallRepository.from_session(session)
            inserted = await repo.record(
                tenant_id=tenant_id,
                workflow_id=workflow_id,
                call_key=call_key,
                model=model.id,
                provider=model.provider,
                input_tokens=response.usage.input_tokens,
                output_tokens=response.usage.output_tokens,
                cost_usd=cost,
                latency_ms=response.latency_ms,
                payload_id=uuid_of(ref),
            )
            if not inserted:  # a concurrent attempt finished first: its row is the bill
                row = await repo.find(tenant_id, call_key)
                if row is not None and row.payload_id is not None:
                    first = await self.store.ref(session, tenant_id, row.payload_id)
                    return _result_of(row, first, replayed=True), await self.store.get(
                        session, tenant_id, first
                    )
        result = CallLlmResult(
            model=model.id,
            provider=model.provider,
            answer=ref,
            usage=Usage(input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens),
            cost_usd=cost,
            latency_ms=response.latency_ms,
        )
        return result, response.content

    async def _streamed(self, request: ChatRequest, on_delta: OnDelta) -> ChatResponse:
        """A streamed completion collected into a response, text fragments passed to ``on_delta``."""
        started = time.perf_counter()
        parts: list[str] = []
        usage = None
        done: DoneEvent | None = None
        async for event in self.registry.stream(request):
            if isinstance(event, TextDelta):
                parts.append(event.text)
                await on_delta(event.text)
            elif isinstance(event, UsageEvent):
                usage = event.usage
            elif isinstance(event, DoneEvent):
                done = event
            elif isinstance(event, ErrorEvent):
                raise ProviderError(
                    _kind(event.kind),
                    event.message,
                    provider=event.provider,
                    status=event.status,
                    retry_after_s=event.retry_after_s,
                    retryable=event.retryable,
                )
        text = "".join(parts)
        if usage is None:
            prompt = sum(count_text(m.text()) for m in request.messages)
            usage = ProviderUsage(input_tokens=prompt, output_tokens=count_text(text))
        latency = done.latency_ms if done and done.latency_ms else (time.perf_counter() - started) * 1000
        return ChatResponse(
            id=done.id if done else "",
            model=request.model,
            provider="",
            content=text,
            usage=usage,
            latency_ms=latency,
        )

    async def billed_embed(
        self, *, tenant_id: str, workflow_id: str, call_key: str, model: str, texts: list[str]
    ) -> EmbedResult:
        """Vectors for ``texts``, stored (JSON payload) and billed once under ``call_key``."""
        async with self.sessions() as session:
            row = await ModelCallRepository.from_session(session).find(tenant_id, call_key)
            if row is not None and row.payload_id is not None:
                raw = await self.store.get(session, tenant_id, str(row.payload_id))
                return EmbedResult(
                    model=row.model,
                    embeddings=json.loads(raw),
                    usage=Usage(input_tokens=row.input_tokens),
                    cost_usd=row.cost_usd,
                    replayed=True,
                )
        try:
            entry = self.catalog.get(model)
        except NexusError as exc:
            raise bad_input(exc.detail) from exc
        try:
            async with heartbeating():
                response = await self.registry.embed(EmbeddingRequest(model=model, input=texts))
        except ProviderError as err:
            raise err.to_application_error() from err
        cost = cost_usd(response.usage, entry.prices)
        async with self.sessions() as session, session.begin():
            ref = await self.store.put(
                session,
                tenant_id,
                json.dumps(response.embeddings),
                idempotency_key=f"{call_key}:vectors",
                content_type="application/json",
            )
            await ModelCallRepository.from_session(session).record(
                tenant_id=tenant_id,
                workflow_id=workflow_id,
                call_key=call_key,
                model=entry.id,
                provider=entry.provider,
                input_tokens=response.usage.input_tokens,
                output_tokens=0,
                cost_usd=cost,
                latency_ms=response.latency_ms,
                payload_id=uuid_of(ref),
            )
        return EmbedResult(
            model=entry.id,
            embeddings=response.embeddings,
            usage=Usage(input_tokens=response.usage.input_tokens),
            cost_usd=cost,
        )


def uuid_of(ref: PayloadRef) -> uuid.UUID:
    """The payload id of a reference."""
    return uuid.UUID(ref.id)


def _kind(value: str) -> ErrorKind:
    try:
        return ErrorKind(value)
    except ValueError:
        return ErrorKind.server


def _result_of(row: ModelCall, ref: PayloadRef, *, replayed: bool) -> CallLlmResult:
    return CallLlmResult(
        model=row.model,
        provider=row.provider,
        ok=row.ok,
        answer=ref,
        usage=Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens),
        cost_usd=Decimal(row.cost_usd),
        latency_ms=row.latency_ms,
        replayed=replayed,
    )
