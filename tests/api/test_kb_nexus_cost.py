"""NEXUS runs grounded on a knowledge base with a provider embedding model: the retrieval's query
embeddings count in the run's cost and budget (patch ``nexus-retrieval-cost``), with the real
worker and the simulator."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from core.config import Settings
from core.db.models import Run
from core.db.orchestration_models import ModelCall
from core.orchestration.contracts import OrchestrationResult, RunOutcome, SubtaskStatus
from core.orchestration.router import ModelInfo, estimate_call_usd
from core.providers.catalog import Catalog
from core.providers.tokens import count_messages
from core.providers.types import Message
from core.temporal.client import connect
from tests.api.test_kb_answer_billing import EMBED, QUESTION, _kb
from tests.api.test_kb_nexus import _payload
from tests.api.test_knowledge_bases_api import MakeKey, api_worker  # noqa: F401  (a fixture)
from tests.api.test_nexus_api import wait_closed
from tests.conftest import auth
from tests.workflows.orchestration_support import GEMINI, MINI, event_types, model_calls
from tests.workflows.orchestration_variants import RetrievalFreeOrchestrationWorkflow
from workflows.orchestrate import OrchestrationWorkflow

LOOKUP = {"id": "lookup", "instruction": QUESTION, "capability": "retrieval"}
MAX_TOKENS = 1024


async def _run(client: httpx.AsyncClient, key: str, kb: str, **extra: Any) -> dict[str, Any]:
    resp = await client.post(
        "/v1/nexus/runs",
        json={
            "task": "Explain VPN access.",
            "plan": {"subtasks": [LOOKUP]},
            "strategy": "majority",
            "models": [MINI],
            "max_tokens": MAX_TOKENS,
            "knowledge_base_ids": [kb],
            **extra,
        },
        headers=auth(key),
    )
    assert resp.status_code == 202, resp.text
    return await wait_closed(client, key, resp.json()["id"])


async def _result(sessions: async_sessionmaker[AsyncSession], run_id: str) -> OrchestrationResult:
    """The workflow's result as the closed runs row stores it (exact Decimals)."""
    async with sessions() as session:
        run = (await session.execute(select(Run).where(Run.workflow_id == run_id))).scalar_one()
    assert run.result is not None
    return OrchestrationResult.model_validate(run.result)


def _retrieval(calls: list[ModelCall], run_id: str) -> list[ModelCall]:
    return [c for c in calls if c.call_key.startswith(f"{run_id}:retrieve:")]


async def test_grounded_run_cost_includes_the_query_embeddings(
    client: httpx.AsyncClient,
    api_worker: None,  # noqa: F811
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb = await _kb(client, key, "nexus-retrieval-cost", embedding_model=EMBED)
    plan = {
        "subtasks": [
            LOOKUP,
            {"id": "advice", "instruction": "Turn it into advice.", "depends_on": ["lookup"]},
        ]
    }
    done = await _run(client, key, kb, plan=plan, models=[MINI, GEMINI], synthesizer_model=MINI)
    assert done["status"] == "completed", done
    run_id = done["id"]

    calls = await model_calls(sessions, run_id)
    retrieval = _retrieval(calls, run_id)
    assert [c.model for c in retrieval] == [EMBED]
    embed_cost = sum((c.cost_usd for c in retrieval), Decimal(0))
    assert embed_cost > 0
    result = await _result(sessions, run_id)
    # Every billed call of the run, the query embedding included, is in the run's cost.
    assert result.cost_usd == sum((c.cost_usd for c in calls), Decimal(0))
    assert result.cost_by_model[EMBED] == embed_cost
    assert sum(result.cost_by_model.values(), Decimal(0)) == result.cost_usd
    by_id = {s.subtask_id: s for s in result.subtasks}
    lookup, advice = by_id["lookup"], by_id["advice"]
    assert lookup.retrieval_cost_usd == embed_cost
    assert lookup.cost_usd == sum((c.cost_usd for c in lookup.candidates), Decimal(0)) + embed_cost
    assert advice.retrieval_cost_usd == 0  # a dependent writing step does not search
    # The API shows the same totals.
    assert Decimal(done["cost_usd"]) == result.cost_usd
    assert Decimal(done["cost_by_model"][EMBED]) == embed_cost
    subtasks = {s["id"]: s for s in done["subtasks"]}
    assert Decimal(subtasks["lookup"]["cost_usd"]) == lookup.cost_usd
    assert Decimal(subtasks["lookup"]["retrieval_cost_usd"]) == embed_cost


async def test_budget_counts_the_retrieval_before_the_proposers(
    client: httpx.AsyncClient,
    api_worker: None,  # noqa: F811
    make_key: MakeKey,
    tenant_id: str,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A budget that fits the proposer's reservation but not that plus the query embedding
    already spent skips the subtask: the run ends ``budget_exhausted`` having spent only the
    retrieval; with the retrieval's cost added the same run completes."""
    key = await make_key(tenant_id)
    kb = await _kb(client, key, "nexus-retrieval-budget", embedding_model=EMBED)
    # A first run measures what the grounded subtask's retrieval and its proposer reservation
    # cost (the same knowledge base and question give the same prompt and the same embedding).
    first = await _run(client, key, kb, budget_usd="0.50")
    assert first["status"] == "completed", first
    retrieval_cost = sum(
        (c.cost_usd for c in _retrieval(await model_calls(sessions, first["id"]), first["id"])), Decimal(0)
    )
    assert retrieval_cost > 0
    raw = await _payload(sessions, tenant_id, f"{first['id']}:prompt:lookup")
    assert raw is not None
    prompt_tokens = count_messages([Message.model_validate(m) for m in json.loads(raw)])
    mini = ModelInfo.from_entry(Catalog.load(settings.providers).get(MINI))
    reservation = estimate_call_usd(mini, prompt_tokens, MAX_TOKENS)

    short_budget = reservation + retrieval_cost / 2
    short = await _run(client, key, kb, budget_usd=str(short_budget))
    assert short["status"] == "completed", short
    result = await _result(sessions, short["id"])
    assert result.outcome is RunOutcome.budget_exhausted
    (lookup,) = result.subtasks
    assert lookup.status is SubtaskStatus.skipped
    assert lookup.candidates == []
    assert lookup.retrieval_cost_usd == lookup.cost_usd == retrieval_cost
    calls = await model_calls(sessions, short["id"])
    assert calls == _retrieval(calls, short["id"])  # no proposer was called
    assert result.cost_usd == retrieval_cost <= short_budget
    assert result.cost_by_model == {EMBED: retrieval_cost}
    assert "budget.exhausted" in await event_types(sessions, short["id"])
    # The run replays on the patched code; without the patch it would have called the proposer.
    temporal = await connect(settings)
    history = await temporal.get_workflow_handle(short["id"]).fetch_history()
    converter = temporal.data_converter
    await Replayer(workflows=[OrchestrationWorkflow], data_converter=converter).replay_workflow(history)
    with pytest.raises(NondeterminismError):
        await Replayer(
            workflows=[RetrievalFreeOrchestrationWorkflow], data_converter=converter
        ).replay_workflow(history)

    enough = await _run(client, key, kb, budget_usd=str(reservation + retrieval_cost))
    result = await _result(sessions, enough["id"])
    assert result.outcome is RunOutcome.completed, result
    assert result.subtasks[0].status is SubtaskStatus.completed
    calls = await model_calls(sessions, enough["id"])
    assert result.cost_usd == sum((c.cost_usd for c in calls), Decimal(0))
    assert retrieval_cost < result.cost_usd <= reservation + retrieval_cost
