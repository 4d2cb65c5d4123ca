"""Helpers of the eval tests: an answer-key simulator, the committed dataset, run inputs, row counts."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cli.embedded import ServerSpec, free_port, port_open, start_server, stop_process
from core.config import Settings
from core.db.eval_models import EvalCaseResult
from core.db.models import RunEvent
from core.db.orchestration_models import ModelCall
from evals.contracts import EvalCase, MetricSpec
from evals.datasets import parse_cases
from evals.repository import DatasetRepository
from evals.targets import EvalRunInput, ModelTarget
from tests.conftest import FIXTURES

EVAL_FIXTURES = FIXTURES / "evals"
DATASET = EVAL_FIXTURES / "arithmetic.jsonl"
GOOD = "sim-openai/gpt-4o"  # always right on the answer key
WORSE = "sim-openai/gpt-4o-mini"  # right on about half the cases
SLOW = "sim-openai/mini-slow"  # right, 0.4 s per call


@pytest.fixture(scope="session")
def eval_sim_port(stack_dir: Path) -> Iterator[int]:
    """A simulator with the eval answer-key scenario, in its own process."""
    port = free_port()
    spec = ServerSpec(
        name="eval-simulator",
        argv=[
            sys.executable,
            "-m",
            "core.simulator",
            "--port",
            str(port),
            "--scenario",
            str(EVAL_FIXTURES / "scenario.yaml"),
        ],
        port=port,
        log=stack_dir / "eval-simulator.log",
        ready=lambda: port_open(port),
    )
    proc = start_server(spec)
    yield port
    stop_process(proc)


@pytest.fixture(scope="session")
def eval_settings(settings: Settings, eval_sim_port: int) -> Settings:
    """The session settings with sim-* models served by the answer-key simulator."""
    providers = settings.providers.model_copy(update={"simulator_url": f"http://127.0.0.1:{eval_sim_port}"})
    return settings.model_copy(update={"providers": providers})


def load_cases(path: Path = DATASET) -> list[EvalCase]:
    """The cases of a committed JSONL dataset."""
    return parse_cases(path.read_bytes(), "jsonl", max_cases=10_000, max_bytes=10_000_000)


async def seed_dataset(
    sessions: async_sessionmaker[AsyncSession], tenant: str, dataset_id: str = "arith", path: Path = DATASET
) -> int:
    """The committed dataset as version 1 of ``dataset_id``; returns the version number."""
    cases = load_cases(path)
    async with sessions() as session, session.begin():
        repo = DatasetRepository.from_session(session)
        await repo.create(tenant, dataset_id, dataset_id, "", "test")
        version = await repo.add_version(tenant, dataset_id, cases, source="upload", created_by="test")
    return version.version


def run_input(tenant: str, model: str = GOOD, **extra: Any) -> EvalRunInput:
    fields: dict[str, Any] = {
        "tenant_id": tenant,
        "dataset_id": "arith",
        "dataset_version": 1,
        "target": ModelTarget(model=model, max_tokens=16),
        "metrics": [MetricSpec(name="normalized_match"), MetricSpec(name="latency")],
        "batch_size": 8,
        "batch_concurrency": 2,
        **extra,
    }
    return EvalRunInput(**fields)


def new_wid(tenant: str) -> str:
    return f"eval:{tenant}:{uuid.uuid4().hex[:12]}"


async def counts(sessions: async_sessionmaker[AsyncSession], tenant: str, wid: str) -> tuple[int, int, int]:
    """(case result rows, distinct cases, model_calls rows) of one run."""
    async with sessions() as s:
        rows = await s.scalar(
            select(func.count()).select_from(EvalCaseResult).where(EvalCaseResult.run_id == wid)
        )
        distinct = await s.scalar(
            select(func.count(func.distinct(EvalCaseResult.case_id))).where(EvalCaseResult.run_id == wid)
        )
        calls = await s.scalar(
            select(func.count())
            .select_from(ModelCall)
            .where(ModelCall.tenant_id == tenant, ModelCall.workflow_id == wid)
        )
    return int(rows or 0), int(distinct or 0), int(calls or 0)


async def event_types(sessions: async_sessionmaker[AsyncSession], wid: str) -> list[str]:
    async with sessions() as s:
        rows = await s.execute(
            select(RunEvent.type).where(RunEvent.workflow_id == wid).order_by(RunEvent.seq)
        )
    return list(rows.scalars())
