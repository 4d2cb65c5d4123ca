"""The ``EvalRun`` workflow on real Temporal, Postgres and an answer-key simulator.

A "worse" model really has lower accuracy on the committed dataset (tests/fixtures/evals/), so a
run of it against a baseline of the good model is flagged as regressed (with p-value and effect
size), while a second run of the same target is not (noise). Budgets stop dispatching batches.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from core.approvals.notify import ChannelSettings, NotificationSettings
from core.config import Settings
from core.db.eval_models import EvalRun
from core.db.models import Run
from evals.targets import EvalRunResult, PipelineTarget
from tests.workflows.eval_support import (
    GOOD,
    WORSE,
    counts,
    eval_settings,
    eval_sim_port,
    event_types,
    new_wid,
    run_input,
    seed_dataset,
)
from tests.workflows.pipeline_support import Receiver, receiver
from workers.main import build_worker
from workflows.eval_run import EvalRunWorkflow

__all__ = ["eval_settings", "eval_sim_port"]


@pytest_asyncio.fixture
async def recv() -> AsyncIterator[Receiver]:
    async with receiver() as r:
        yield r


@pytest_asyncio.fixture
async def eval_worker(
    temporal_client: Client,
    eval_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    task_queue: str,
    recv: Receiver,
) -> AsyncIterator[Worker]:
    channels = {"ops": ChannelSettings(kind="webhook", url=recv.url + "/alerts", allow_private=True)}
    settings = eval_settings.model_copy(update={"approvals": NotificationSettings(channels=channels)})
    async with build_worker(temporal_client, settings, sessions, redis_client, task_queue) as w:
        yield w


async def _run(client: Client, queue: str, wid: str, inp: object) -> EvalRunResult:
    return await client.execute_workflow(
        EvalRunWorkflow.run, inp, id=wid, task_queue=queue, result_type=EvalRunResult
    )


async def test_model_run_scores_every_case_once_and_streams_progress(
    temporal_client: Client,
    eval_worker: Worker,
    task_queue: str,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
) -> None:
    await seed_dataset(sessions, tenant)
    wid = new_wid(tenant)
    result = await _run(temporal_client, task_queue, wid, run_input(tenant))
    assert result.status == "completed"
    assert result.evaluated == 40
    match = result.aggregates["metrics"]["normalized_match"]
    assert match["mean"] == 1.0
    assert match["ci_low"] <= match["mean"] <= match["ci_high"]
    assert result.aggregates["pass_rate"] == 1.0
    assert result.aggregates["latency_ms"]["p95"] is not None
    assert await counts(sessions, tenant, wid) == (40, 40, 40)
    types = await event_types(sessions, wid)
    assert types[0] == "run.started"
    assert types.count("eval.progress") == 5  # 40 cases in batches of 8
    assert types[-2:] == ["eval.aggregated", "run.completed"]
    async with sessions() as s:
        run = (await s.execute(select(Run).where(Run.workflow_id == wid))).scalar_one()
        row = (await s.execute(select(EvalRun).where(EvalRun.id == wid))).scalar_one()
    assert run.status == "completed"
    assert run.kind == "eval"
    assert row.status == "completed"
    assert float(row.cost_usd) > 0
    assert float(row.cost_usd) == float(run.cost_usd) or abs(float(row.cost_usd) - float(run.cost_usd)) < 1e-5


async def test_a_worse_model_is_flagged_and_noise_is_not(
    temporal_client: Client,
    eval_worker: Worker,
    task_queue: str,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
    recv: Receiver,
) -> None:
    await seed_dataset(sessions, tenant)
    baseline = new_wid(tenant)
    base = await _run(temporal_client, task_queue, baseline, run_input(tenant, GOOD))
    assert base.aggregates["metrics"]["normalized_match"]["mean"] == 1.0

    worse = await _run(
        temporal_client,
        task_queue,
        new_wid(tenant),
        run_input(tenant, WORSE, baseline_run_id=baseline, alert_channels=["ops"]),
    )
    assert worse.aggregates["metrics"]["normalized_match"]["mean"] < 0.8
    assert worse.regression is not None
    assert worse.regression["regressed"] is True
    assert worse.regression["p_value"] < 0.01
    assert worse.regression["effect_size"] < 0
    assert worse.regression["n"] == 40
    alerts = [c for c in recv.calls if c.path == "/alerts"]
    assert len(alerts) == 1
    body = json.loads(alerts[0].body)
    assert body["type"] == "eval.regressed"
    assert body["baseline_run_id"] == baseline

    same = await _run(
        temporal_client,
        task_queue,
        new_wid(tenant),
        run_input(tenant, GOOD, baseline_run_id=baseline, alert_channels=["ops"]),
    )
    assert same.regression is not None
    assert same.regression["regressed"] is False
    assert len([c for c in recv.calls if c.path == "/alerts"]) == 1


async def test_budget_stops_dispatching_with_partial_results(
    temporal_client: Client,
    eval_worker: Worker,
    task_queue: str,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
) -> None:
    await seed_dataset(sessions, tenant)
    wid = new_wid(tenant)
    # A case costs ~1e-4 USD on gpt-4o (about 35 prompt + 1-2 answer tokens); the estimate
    # before the first batch assumes the full 16-token completion (~2.5e-4 per case).
    budget = 0.0025
    inp = run_input(tenant, GOOD, budget_usd=budget, batch_concurrency=1)
    result = await _run(temporal_client, task_queue, wid, inp)
    assert result.status == "budget_exhausted"
    rows, _, calls = await counts(sessions, tenant, wid)
    assert 0 < rows < 40
    assert rows == calls == result.evaluated
    assert 0 < result.cost_usd <= budget
    assert "eval.budget_exhausted" in await event_types(sessions, wid)


async def test_pipeline_target_runs_child_workflows(
    temporal_client: Client,
    eval_worker: Worker,
    task_queue: str,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
) -> None:
    from core.pipelines.definition import PipelineDefinition
    from core.pipelines.repository import PipelineRepository

    await seed_dataset(sessions, tenant)
    defn = PipelineDefinition.model_validate(
        {
            "name": "answer",
            "inputs": {"question": {"type": "string"}},
            "steps": [{"id": "ask", "type": "llm", "model": GOOD, "prompt": "{{ inputs.question }}"}],
            "outputs": {"answer": "{{ steps.ask.output }}"},
        }
    )
    async with sessions() as session, session.begin():
        await PipelineRepository.from_session(session).create(tenant, "answer", defn, "test")
    wid = new_wid(tenant)
    target = PipelineTarget(pipeline_id="answer", version=1, input_name="question")
    result = await _run(temporal_client, task_queue, wid, run_input(tenant, target=target, batch_size=20))
    assert result.status == "completed"
    assert result.evaluated == 40
    assert result.aggregates["metrics"]["normalized_match"]["mean"] == 1.0
    rows, distinct, _ = await counts(sessions, tenant, wid)
    assert rows == distinct == 40


async def test_nexus_target_runs_one_billed_orchestration_per_case(
    temporal_client: Client,
    eval_worker: Worker,
    task_queue: str,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
) -> None:
    from decimal import Decimal

    from sqlalchemy import func

    from core.db.eval_models import EvalCaseResult
    from core.db.orchestration_models import ModelCall
    from evals.targets import NexusTarget

    await seed_dataset(sessions, tenant)
    wid = new_wid(tenant)
    target = NexusTarget(models=[GOOD], skip_planning=True, max_tokens=16)
    result = await _run(temporal_client, task_queue, wid, run_input(tenant, target=target, batch_size=10))
    assert result.status == "completed"
    assert result.evaluated == 40
    assert result.aggregates["metrics"]["normalized_match"]["mean"] == 1.0
    assert result.aggregates["target_errors"] == 0
    async with sessions() as s:
        rows = list((await s.execute(select(EvalCaseResult).where(EvalCaseResult.run_id == wid))).scalars())
        children = list(
            (
                await s.execute(
                    select(Run).where(Run.tenant_id == tenant, Run.workflow_id.like(f"nexus:{tenant}:eval-%"))
                )
            ).scalars()
        )
        billed = dict(
            (
                await s.execute(
                    select(ModelCall.workflow_id, func.sum(ModelCall.cost_usd))
                    .where(
                        ModelCall.tenant_id == tenant, ModelCall.workflow_id.like(f"nexus:{tenant}:eval-%")
                    )
                    .group_by(ModelCall.workflow_id)
                )
            ).all()
        )
        keys = (
            await s.execute(
                select(func.count(), func.count(func.distinct(ModelCall.call_key))).where(
                    ModelCall.tenant_id == tenant, ModelCall.workflow_id.like(f"nexus:{tenant}:eval-%")
                )
            )
        ).one()
    # One NEXUS run per case, each closed, each billed once: its model calls have distinct keys and
    # its run cost is what its model calls cost; the eval's case cost is that run's cost.
    assert len(rows) == len({r.case_id for r in rows}) == 40
    assert len(children) == 40
    assert all(c.status == "completed" and c.kind == "nexus" for c in children)
    assert keys[0] == keys[1] >= 40
    assert set(billed) == {c.workflow_id for c in children}
    for child in children:
        assert abs(Decimal(child.cost_usd) - Decimal(billed[child.workflow_id])) < Decimal("1e-6")
    assert all(r.error is None and r.output_preview.strip() for r in rows)
    assert all(float(r.cost_usd) > 0 for r in rows)
    total_children = sum(Decimal(c.cost_usd) for c in children)
    assert abs(Decimal(str(result.cost_usd)) - total_children) < Decimal("1e-5")
