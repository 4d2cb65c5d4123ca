"""``/v1/nexus/runs`` over HTTP with a real worker on the API's task queue and the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.temporal.client import connect
from tests.api.test_runs_api import assert_problem, sse_events
from tests.conftest import auth
from tests.workflows.orchestration_support import GEMINI, MINI
from workers.main import build_worker

MakeKey = Callable[..., Awaitable[str]]
PLAN = {
    "subtasks": [
        {"id": "capital", "instruction": "What is the capital of France?", "answer_type": "short"},
        {"id": "product", "instruction": "What is 17 * 23?", "answer_type": "short", "capability": "math"},
    ]
}


@pytest_asyncio.fixture(scope="module")
async def api_worker(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    client = await connect(settings)
    redis = Redis.from_url(settings.redis.url)
    async with build_worker(client, settings, sessions, redis, settings.temporal.task_queue):
        yield
    await redis.aclose()


@pytest_asyncio.fixture
async def owner(make_key: MakeKey, tenant_id: str) -> str:
    return await make_key(tenant_id)


def body(**extra: Any) -> dict[str, Any]:
    return {
        "task": "Answer two questions.",
        "plan": PLAN,
        "strategy": "majority",
        "models": [MINI, GEMINI],
        "synthesizer_model": MINI,
        "budget_usd": "0.50",
        **extra,
    }


def run_url(run_id: str, suffix: str = "") -> str:
    return f"/v1/nexus/runs/{quote(run_id, safe='')}{suffix}"


async def wait_closed(client: httpx.AsyncClient, key: str, run_id: str) -> dict[str, Any]:
    for _ in range(300):
        resp = await client.get(run_url(run_id), headers=auth(key))
        assert resp.status_code == 200, resp.text
        out: dict[str, Any] = resp.json()
        if out["closed_at"] is not None:
            return out
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish: {out}")


async def test_start_get_events_and_answer(
    client: httpx.AsyncClient, api_worker: None, owner: str, tenant_id: str
) -> None:
    started = await client.post("/v1/nexus/runs", json=body(), headers=auth(owner))
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    assert run_id.startswith(f"nexus:{tenant_id}:")
    assert started.json()["status"] == "running"

    done = await wait_closed(client, owner, run_id)
    assert done["status"] == "completed"
    assert done["outcome"] == "completed"
    assert "Paris" in done["answer"]
    assert [s["id"] for s in done["subtasks"]] == ["capital", "product"]
    product = next(s for s in done["subtasks"] if s["id"] == "product")
    assert product["consensus"]["answer_preview"] == "391"
    assert {c["model"] for c in product["candidates"]} == {MINI, GEMINI}
    assert all(c["preview"] for c in product["candidates"])
    assert sorted(product["consensus"]["votes"]) == ["391"]
    assert 0 < float(done["cost_usd"]) <= 0.5

    listed = await client.get("/v1/runs", params={"kind": "nexus"}, headers=auth(owner))
    assert [r["id"] for r in listed.json()["data"]] == [run_id]
    assert listed.json()["data"][0]["cost_usd"] > 0

    stream = await client.get(done["events_url"], headers=auth(owner))
    types = [e["event"] for e in sse_events(stream.text)]
    assert types[0] == "run.started"
    assert {"plan.ready", "subtask.started", "consensus.reached", "subtask.finished"} <= set(types)
    assert types[-1] == "run.completed"


async def test_another_tenant_gets_404_for_get_cancel_and_events(
    client: httpx.AsyncClient, api_worker: None, owner: str, make_key: MakeKey
) -> None:
    started = await client.post("/v1/nexus/runs", json=body(), headers=auth(owner))
    run_id = started.json()["id"]
    stranger = await make_key("t-stranger-nexus")
    assert_problem(await client.get(run_url(run_id), headers=auth(stranger)), 404, "not_found")
    runs = f"/v1/runs/{quote(run_id, safe='')}"
    assert_problem(await client.post(f"{runs}/cancel", headers=auth(stranger)), 404, "not_found")
    assert_problem(await client.get(f"{runs}/events", headers=auth(stranger)), 404, "not_found")
    await wait_closed(client, owner, run_id)


async def test_idempotency_key_returns_the_same_run(
    client: httpx.AsyncClient, api_worker: None, owner: str
) -> None:
    headers = {**auth(owner), "Idempotency-Key": "nexus-once"}
    first = await client.post("/v1/nexus/runs", json=body(), headers=headers)
    second = await client.post("/v1/nexus/runs", json=body(), headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    await wait_closed(client, owner, first.json()["id"])


async def test_cancel_a_running_run(client: httpx.AsyncClient, api_worker: None, owner: str) -> None:
    slow = body(models=["sim-openai/mini-slow"], plan=None, skip_planning=True)
    run_id = (await client.post("/v1/nexus/runs", json=slow, headers=auth(owner))).json()["id"]
    cancelled = await client.post(f"/v1/runs/{quote(run_id, safe='')}/cancel", headers=auth(owner))
    assert cancelled.status_code == 202, cancelled.text
    done = await wait_closed(client, owner, run_id)
    assert done["status"] == "cancelled"


async def test_validation_unknown_field_unknown_model_and_scopes(
    client: httpx.AsyncClient, owner: str, make_key: MakeKey, tenant_id: str
) -> None:
    assert_problem(
        await client.post("/v1/nexus/runs", json=body(surprise=1), headers=auth(owner)),
        422,
        "validation_error",
    )
    assert_problem(
        await client.post("/v1/nexus/runs", json=body(models=["sim-openai/nope"]), headers=auth(owner)),
        404,
        "not_found",
    )
    assert_problem(
        await client.post("/v1/nexus/runs", json=body(task="x" * 100_001), headers=auth(owner)),
        422,
        "validation_error",
    )
    assert_problem(
        await client.post("/v1/nexus/runs", json=body(regions=["eu"]), headers=auth(owner)),
        422,
        "validation_error",
    )
    scoped = await make_key(tenant_id, scopes=[f"models:{MINI}"])
    assert_problem(
        await client.post("/v1/nexus/runs", json=body(models=[GEMINI]), headers=auth(scoped)),
        404,
        "not_found",
    )
    # Without a named panel, a scoped key's run routes only over the models it may use.
    started = await client.post("/v1/nexus/runs", json=body(models=None), headers=auth(scoped))
    assert started.status_code == 202, started.text
    viewer = await make_key(tenant_id, role="viewer")
    assert_problem(await client.post("/v1/nexus/runs", json=body(), headers=auth(viewer)), 403, "forbidden")
