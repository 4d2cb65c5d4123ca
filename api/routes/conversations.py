"""``/v1/conversations``: chat with NEXUS. Each user turn is one orchestration run with memory.

A turn's task is the conversation so far (recent turns verbatim, older ones summarised; see
``core/orchestration/memory.py``) plus the new message. ``"stream": true`` answers with the
run's events as Server-Sent Events, including the synthesis tokens as they are produced.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import PrincipalDep, RedisDep, SessionDep, StateDep, TemporalDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.routes.nexus import NexusRunRequest, start_nexus_run
from api.schemas import StrictModel
from core import events
from core.db.conversation_models import Conversation, ConversationTurn
from core.db.models import Run
from core.errors import Conflict, NotFound
from core.governance.audit import append
from core.identity import Permission, Principal
from core.orchestration.contracts import PayloadRef, Strategy
from core.orchestration.memory import Turn, build_task
from core.payloads import PayloadStore

router = APIRouter(tags=["conversations"])


class ConversationCreate(StrictModel):
    title: str = Field("", max_length=300)
    strategy: Strategy = Strategy.adaptive
    models: list[str] | None = Field(None, max_length=9)
    synthesizer_model: str | None = None
    budget_usd: Decimal = Field(Decimal("0.50"), gt=0, le=1000, description="Budget of each turn.")
    confidence_target: float = Field(0.8, gt=0, le=1)


class MessageIn(StrictModel):
    content: str = Field(min_length=1, max_length=50_000)
    stream: bool = False


class TurnOut(BaseModel):
    seq: int
    question: str
    run_id: str
    status: str
    answer: str | None
    created_at: dt.datetime


class ConversationOut(BaseModel):
    id: uuid.UUID
    title: str
    options: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    turns: list[TurnOut] = Field(default_factory=list)


async def _get(session: SessionDep, principal: Principal, conversation_id: uuid.UUID) -> Conversation:
    conv = (
        await session.execute(
            select(Conversation).where(
                Conversation.id == conversation_id, Conversation.tenant_id == principal.tenant_id
            )
        )
    ).scalar_one_or_none()
    if conv is None:
        raise NotFound("conversation not found")
    return conv


async def _turns(session: SessionDep, principal: Principal, conv: Conversation) -> list[TurnOut]:
    rows = (
        await session.execute(
            select(ConversationTurn, Run)
            .join(
                Run,
                (Run.workflow_id == ConversationTurn.run_id) & (Run.tenant_id == ConversationTurn.tenant_id),
            )
            .where(
                ConversationTurn.conversation_id == conv.id, ConversationTurn.tenant_id == principal.tenant_id
            )
            .order_by(ConversationTurn.seq)
        )
    ).all()
    store = PayloadStore()
    out = []
    for turn, run in rows:
        answer = None
        ref = (run.result or {}).get("answer")
        if ref:
            answer = await store.get(session, principal.tenant_id, PayloadRef.model_validate(ref))
        out.append(
            TurnOut(
                seq=turn.seq,
                question=turn.question,
                run_id=turn.run_id,
                status=run.status,
                answer=answer,
                created_at=turn.created_at,
            )
        )
    return out


def _out(conv: Conversation, turns: list[TurnOut] | None = None) -> ConversationOut:
    return ConversationOut(
        id=conv.id,
        title=conv.title,
        options=conv.options,
        created_at=conv.created_at,
        updated_at=conv.updated_at,
        turns=turns or [],
    )


@router.post("/conversations", status_code=201, response_model=ConversationOut)
async def create_conversation(
    body: ConversationCreate, session: SessionDep, principal: PrincipalDep
) -> ConversationOut:
    principal.require(Permission.runs_write)
    options = body.model_dump(mode="json", exclude={"title"}, exclude_none=True)
    conv = Conversation(
        tenant_id=principal.tenant_id, title=body.title, created_by=principal.actor, options=options
    )
    session.add(conv)
    await session.flush()
    await session.refresh(conv)
    await append(
        session,
        actor=principal.actor,
        action="conversation.create",
        tenant_id=principal.tenant_id,
        target=f"conversation:{conv.id}",
    )
    return _out(conv)


@router.get("/conversations", summary="The tenant's conversations, most recently active first")
async def list_conversations(
    session: SessionDep, principal: PrincipalDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> dict[str, Any]:
    principal.require(Permission.runs_read)
    query = (
        select(Conversation)
        .where(Conversation.tenant_id == principal.tenant_id)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(limit + 1)
    )
    after = decode_cursor(cursor)
    if after:
        moment, conv_id = dt.datetime.fromisoformat(str(after[0])), uuid.UUID(str(after[1]))
        query = query.where((Conversation.updated_at, Conversation.id) < (moment, conv_id))  # type: ignore[operator]
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor([rows[-1].updated_at.isoformat(), str(rows[-1].id)]) if more else None
    return {"data": [_out(c).model_dump(mode="json") for c in rows], "next_cursor": next_cursor}


@router.get("/conversations/{conversation_id}", response_model=ConversationOut)
async def get_conversation(
    conversation_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> ConversationOut:
    principal.require(Permission.runs_read)
    conv = await _get(session, principal, conversation_id)
    return _out(conv, await _turns(session, principal, conv))


@router.post("/conversations/{conversation_id}/messages", status_code=202, response_model=None)
async def post_message(
    conversation_id: uuid.UUID,
    body: MessageIn,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
    redis: RedisDep,
) -> Any:
    """Ask the next question. 202 with the turn's run, or (``stream``) its events as SSE."""
    principal.require(Permission.runs_write)
    conv = await _get(session, principal, conversation_id)
    turns = await _turns(session, principal, conv)
    if turns and turns[-1].answer is None and turns[-1].status in ("running", "pending"):
        raise Conflict("the previous turn is still running; wait for its answer")
    seq = (
        await session.scalar(
            select(func.coalesce(func.max(ConversationTurn.seq), 0)).where(
                ConversationTurn.conversation_id == conv.id
            )
        )
        or 0
    ) + 1
    task = build_task([Turn(t.question, t.answer) for t in turns], body.content)
    run = await start_nexus_run(
        NexusRunRequest(task=task, **conv.options),
        response,
        session,
        principal,
        state,
        temporal,
        idempotency_key=f"conversation-{conv.id}-{seq}",
    )
    try:
        async with session.begin_nested():
            session.add(
                ConversationTurn(
                    conversation_id=conv.id,
                    tenant_id=principal.tenant_id,
                    seq=seq,
                    question=body.content,
                    run_id=run.id,
                )
            )
    except IntegrityError as exc:
        raise Conflict("another message was posted at the same time; retry") from exc
    conv.updated_at = dt.datetime.now(dt.UTC)
    if not body.stream:
        return {"conversation_id": str(conv.id), "seq": seq, "run": run.model_dump(mode="json")}
    return EventSourceResponse(_stream(request, state, redis, principal.tenant_id, run.id), ping=15)


async def _stream(
    request: Request, state: Any, redis: Any, tenant_id: str, run_id: str
) -> AsyncIterator[ServerSentEvent]:
    async for event in events.follow(state.sessions, redis, tenant_id=tenant_id, workflow_id=run_id):
        if await request.is_disconnected():
            return
        yield ServerSentEvent(id=str(event.seq), event=event.type, data=orjson.dumps(event.data).decode())
