"""Eval targets end to end through the API: a knowledge-base answer configuration.

A two-document knowledge base is ingested by a real worker (local MiniLM embedder), a dataset
asks two questions it answers and one it does not, and an eval run scores the knowledge-base
target with ``exact``, ``faithfulness`` and ``context_recall`` against the answer-key simulator
(tests/fixtures/evals/scenario.yaml): the answering model answers only when the retrieved passage
carries the fact, and the judge's verdicts depend on the retrieved contexts, so the scores follow
from real retrieval (``top_k: 1``: the wrong chunk would score 0).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.db.orchestration_models import ModelCall
from core.temporal.client import connect
from tests.conftest import auth
from tests.workflows.eval_support import GOOD, eval_settings, eval_sim_port
from workers.main import build_worker

__all__ = ["eval_settings", "eval_sim_port"]
MakeKey = Callable[..., Awaitable[str]]
# The judge: a model without JSON mode, so the simulator returns its scripted verdicts verbatim
# (in JSON mode it wraps any text in {"answer": ...}).
JUDGE = "sim-deepseek/deepseek-reasoner"
REACTOR = "The Zorblax reactor operates at a core temperature of 451 kelvin. It was commissioned in Quillby."
FESTIVAL = "The Flumph festival is held every spring in Marrowdale. Visitors eat blue pancakes there."
CASES = [
    {
        "id": "temp",
        "input": "What core temperature does the Zorblax reactor operate at?",
        "expected": "451 kelvin",
    },
    {"id": "where", "input": "Where is the Flumph festival held?", "expected": "Marrowdale"},
    {"id": "absent", "input": "Who won the 1998 Tour de France cycling race?", "expected": "Marco Pantani"},
]


@pytest_asyncio.fixture(scope="module")
def api_settings(eval_settings: Settings) -> Settings:
    temporal = eval_settings.temporal.model_copy(
        update={"task_queue": f"eval-targets-{uuid.uuid4().hex[:8]}"}
    )
    return eval_settings.model_copy(update={"temporal": temporal})


@pytest_asyncio.fixture(scope="module")
async def api(api_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    from asgi_lifespan import LifespanManager

    from api.app import create_app

    application = create_app(api_settings)
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
            yield http


@pytest_asyncio.fixture(scope="module")
async def api_worker(
    api_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[None]:
    client = await connect(api_settings)
    redis = Redis.from_url(api_settings.redis.url)
    async with build_worker(client, api_settings, sessions, redis, api_settings.temporal.task_queue):
        yield
    await redis.aclose()


async def _knowledge_base(api: httpx.AsyncClient, key: str) -> str:
    resp = await api.post("/v1/knowledge-bases", json={"name": "trivia"}, headers=auth(key))
    assert resp.status_code == 201, resp.text
    kb = str(resp.json()["id"])
    docs = []
    for title, text in (("Reactor", REACTOR), ("Festival", FESTIVAL)):
        resp = await api.post(
            f"/v1/knowledge-bases/{kb}/documents", json={"title": title, "text": text}, headers=auth(key)
        )
        assert resp.status_code == 202, resp.text
        docs.append(resp.json()["id"])
    for doc in docs:
        for _ in range(300):
            status = (await api.get(f"/v1/knowledge-bases/{kb}/documents/{doc}", headers=auth(key))).json()
            if status["status"] in ("ready", "failed"):
                break
            await asyncio.sleep(0.1)
        assert status["status"] == "ready", status
    return kb


async def _dataset(api: httpx.AsyncClient, key: str, dataset: str, cases: list[dict[str, Any]]) -> None:
    assert (await api.post("/v1/datasets", json={"id": dataset}, headers=auth(key))).status_code == 201
    resp = await api.post(
        f"/v1/datasets/{dataset}/versions",
        content="\n".join(json.dumps(c) for c in cases).encode(),
        headers={**auth(key), "Content-Type": "application/jsonl"},
    )
    assert resp.status_code == 201, resp.text


async def _wait_done(api: httpx.AsyncClient, key: str, run_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(900):
        resp = await api.get(f"/v1/evals/runs/{run_id}", headers=auth(key))
        assert resp.status_code == 200, resp.text
        out = resp.json()
        if out["status"] != "running":
            return out
        await asyncio.sleep(0.1)
    raise AssertionError(f"eval run {run_id} did not finish: {out}")


def _scores(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in row["scores"]}


async def test_knowledge_base_target_scores_real_retrieval(
    api: httpx.AsyncClient,
    api_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb = await _knowledge_base(api, key)
    await _dataset(api, key, "trivia", CASES)
    target = {"kind": "knowledge_base", "knowledge_base_id": kb, "model": GOOD, "top_k": 1, "max_tokens": 64}
    run = {
        "dataset_id": "trivia",
        "target": target,
        "metrics": [{"name": "exact"}, {"name": "faithfulness"}, {"name": "context_recall"}],
        "judge_model": JUDGE,
    }
    resp = await api.post("/v1/evals/runs", json=run, headers=auth(key))
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["id"]
    out = await _wait_done(api, key, run_id)
    assert out["status"] == "completed", out
    assert out["evaluated"] == 3

    resp = await api.get(f"/v1/evals/runs/{run_id}/results?limit=10", headers=auth(key))
    rows = {r["case_id"]: r for r in resp.json()["data"]}
    for case_id, fact in (("temp", "451 kelvin"), ("where", "Marrowdale")):
        row = rows[case_id]
        scores = _scores(row)
        assert row["output_preview"] == fact
        assert row["passed"] is True
        assert scores["exact"]["value"] == 1.0
        assert scores["faithfulness"]["value"] == 1.0, scores
        assert scores["faithfulness"]["detail"]["contexts_from"] == "output"  # the retrieved chunk
        assert scores["context_recall"]["value"] == 1.0, scores
    absent = rows["absent"]
    scores = _scores(absent)
    assert absent["output_preview"] == "Not found in the knowledge base."
    assert absent["passed"] is False
    assert scores["exact"]["value"] == 0.0
    assert scores["context_recall"]["value"] == 0.0  # the retrieved chunk does not hold the reference
    assert scores["faithfulness"]["value"] is None  # "not found" states nothing (RAGAS: NaN)
    assert scores["faithfulness"]["error"]

    metrics = out["aggregates"]["metrics"]
    assert out["aggregates"]["pass_rate"] == 2 / 3
    assert metrics["exact"]["mean"] == 2 / 3
    assert metrics["context_recall"]["mean"] == 2 / 3
    assert metrics["faithfulness"]["mean"] == 1.0
    assert metrics["faithfulness"]["errors"] == 1

    # Every model call of the run (answers and judge calls) is billed once under its own key.
    async with sessions() as s:
        keys = list(
            (await s.execute(select(ModelCall.call_key).where(ModelCall.workflow_id == run_id))).scalars()
        )
    assert len(keys) == len(set(keys))
    answers = [k for k in keys if k.endswith(":target")]
    assert {k.split(":case:")[1] for k in answers} >= {"temp:target", "where:target"}
    assert float(out["cost_usd"]) > 0


async def test_knowledge_base_target_of_another_tenant_is_not_found(
    api: httpx.AsyncClient, api_worker: None, make_key: MakeKey, tenant_id: str
) -> None:
    key = await make_key(tenant_id)
    kb = await _knowledge_base(api, key)
    other = await make_key(f"{tenant_id}-b")
    await _dataset(api, other, "trivia", CASES[:1])
    run = {
        "dataset_id": "trivia",
        "target": {"kind": "knowledge_base", "knowledge_base_id": kb, "model": GOOD},
        "metrics": [{"name": "exact"}],
    }
    resp = await api.post("/v1/evals/runs", json=run, headers=auth(other))
    assert resp.status_code == 404, resp.text
