"""Helpers of the orchestration tests: store a task, start a run, read its billing rows."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.models import RunEvent
from core.db.orchestration_models import ModelCall
from core.orchestration.contracts import OrchestrationInput, PayloadRef, Plan, Subtask
from core.payloads import PayloadStore

MINI = "sim-openai/gpt-4o-mini"
GEMINI = "sim-gemini/gemini-2.5-flash"
CLAUDE = "sim-anthropic/claude-sonnet-4"
FAILING = "sim-openai/always-500"
JUDGE = "sim-openai/verdict"
SLOW = ["sim-openai/mini-slow", "sim-openai/large-slow", "sim-anthropic/sonnet-slow"]


def wid(tenant: str) -> str:
    return f"nexus:{tenant}:{uuid.uuid4().hex[:12]}"


async def store_task(sessions: async_sessionmaker[AsyncSession], tenant: str, text: str) -> PayloadRef:
    async with sessions() as session, session.begin():
        return await PayloadStore().put(session, tenant, text)


async def read_text(sessions: async_sessionmaker[AsyncSession], tenant: str, ref: PayloadRef) -> str:
    async with sessions() as session:
        return await PayloadStore().get(session, tenant, ref)


def two_facts_plan() -> Plan:
    return Plan(
        subtasks=[
            Subtask(id="capital", instruction="What is the capital of France?", answer_type="short"),
            Subtask(id="product", instruction="What is 17 * 23?", capability="math", answer_type="short"),
        ]
    )


def orchestration_input(tenant: str, task: PayloadRef, **fields: Any) -> OrchestrationInput:
    return OrchestrationInput(tenant_id=tenant, created_by="test", task=task, **fields)


async def model_calls(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> list[ModelCall]:
    async with sessions() as s:
        rows = await s.execute(
            select(ModelCall).where(ModelCall.workflow_id == workflow_id).order_by(ModelCall.id)
        )
        return list(rows.scalars())


async def event_types(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> list[str]:
    async with sessions() as s:
        rows = await s.execute(
            select(RunEvent).where(RunEvent.workflow_id == workflow_id).order_by(RunEvent.seq)
        )
        return [e.type for e in rows.scalars()]
