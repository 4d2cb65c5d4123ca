"""``/v1/evals``: runs end to end through the API, regression vs baseline, A/B compare,
datasets from run results, tenancy, and scheduled evals (Temporal Schedules).

Schedules are tested on the session's Temporal dev server: the time-skipping test server does
not implement the Schedule API (CreateSchedule answers "unimplemented"), so the schedule fires
every 2 s in real time and the test checks two runs started on time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.temporal.client import connect
from tests.conftest import auth
from tests.workflows.eval_support import DATASET, GOOD, WORSE, eval_settings, eval_sim_port
from workers.main import build_worker

__all__ = ["eval_settings", "eval_sim_port"]
MakeKey = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture(scope="module")
def api_settings(eval_settings: Settings) -> Settings:
    temporal = eval_settings.temporal.model_copy(update={"task_queue": f"evals-api-{uuid.uuid4().hex[:8]}"})
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


@pytest_asyncio.fixture
async def owner(make_key: MakeKey, tenant_id: str, api: httpx.AsyncClient) -> str:
    key = await make_key(tenant_id)
    assert (await api.post("/v1/datasets", json={"id": "arith"}, headers=auth(key))).status_code == 201
    resp = await api.post(
        "/v1/datasets/arith/versions",
        content=DATASET.read_bytes(),
        headers={**auth(key), "Content-Type": "application/jsonl"},
    )
    assert resp.status_code == 201, resp.text
    return key


def body(model: str = GOOD, **extra: Any) -> dict[str, Any]:
    return {
        "dataset_id": "arith",
        "target": {"kind": "model", "model": model, "max_tokens": 16},
        "metrics": [{"name": "normalized_match"}, {"name": "latency"}],
        "batch_size": 10,
        **extra,
    }


async def wait_done(api: httpx.AsyncClient, key: str, run_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(600):
        resp = await api.get(f"/v1/evals/runs/{run_id}", headers=auth(key))
        assert resp.status_code == 200, resp.text
        out = resp.json()
        if out["status"] != "running":
            return out
        await asyncio.sleep(0.1)
    raise AssertionError(f"eval run {run_id} did not finish: {out}")


async def test_run_regression_compare_and_dataset_from_run(
    api: httpx.AsyncClient, api_worker: None, owner: str, make_key: MakeKey, tenant_id: str
) -> None:
    headers = {**auth(owner), "Idempotency-Key": "nightly-1"}
    first = await api.post("/v1/evals/runs", json=body(), headers=headers)
    assert first.status_code == 202, first.text
    again = await api.post("/v1/evals/runs", json=body(), headers=headers)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    base = await wait_done(api, owner, first.json()["id"])
    assert base["status"] == "completed"
    assert base["evaluated"] == 40
    assert base["aggregates"]["metrics"]["normalized_match"]["mean"] == 1.0

    # The generic runs view shows progress events with partial aggregates.
    detail = (await api.get(f"/v1/runs/{base['id']}", headers=auth(owner))).json()
    progress = [e for e in detail["events"] if e["type"] == "eval.progress"]
    assert len(progress) == 4
    assert progress[-1]["data"]["done"] == 40
    assert progress[0]["data"]["partial"]["means"]["normalized_match"] == 1.0

    results = (await api.get(f"/v1/evals/runs/{base['id']}/results?limit=5", headers=auth(owner))).json()
    assert [r["case_id"] for r in results["data"]] == [f"case-{i:03d}" for i in range(1, 6)]
    assert results["data"][0]["passed"] is True

    worse = await api.post(
        "/v1/evals/runs", json=body(WORSE, baseline_run_id=base["id"]), headers=auth(owner)
    )
    cand = await wait_done(api, owner, worse.json()["id"])
    assert cand["regression"]["regressed"] is True
    assert cand["regression"]["p_value"] < 0.01

    cmp = (await api.get(f"/v1/evals/runs/{base['id']}/compare/{cand['id']}", headers=auth(owner))).json()
    assert cmp["n"] == 40
    assert cmp["paired_test"]["p_value"] < 0.01
    assert cmp["paired_test"]["mean_diff"] < 0
    assert cmp["mcnemar"]["b_only"] == 0
    assert cmp["mcnemar"]["a_only"] == sum(1 for c in cmp["cases"] if c["diff"] < 0)
    posted = await api.post(
        "/v1/evals/compare",
        json={"run_a": base["id"], "run_b": cand["id"], "method": "bootstrap"},
        headers=auth(owner),
    )
    assert posted.json()["paired_test"]["method"] == "bootstrap"

    failed = cmp["mcnemar"]["a_only"]
    resp = await api.post(
        "/v1/datasets/arith/versions/from-run",
        json={"run_id": cand["id"], "only": "failed"},
        headers=auth(owner),
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["case_count"] == failed
    assert resp.json()["source"] == "run"

    stranger = await make_key(f"{tenant_id}-x")
    assert (await api.get(f"/v1/evals/runs/{base['id']}", headers=auth(stranger))).status_code == 404
    assert (
        await api.get(f"/v1/evals/runs/{base['id']}/compare/{cand['id']}", headers=auth(stranger))
    ).status_code == 404
    listed = (await api.get("/v1/evals/runs?dataset_id=arith", headers=auth(owner))).json()["data"]
    assert {r["id"] for r in listed} == {base["id"], cand["id"]}


async def test_bad_requests(api: httpx.AsyncClient, owner: str) -> None:
    resp = await api.post("/v1/evals/runs", json=body(metrics=[{"name": "nope"}]), headers=auth(owner))
    assert resp.status_code == 422
    resp = await api.post("/v1/evals/runs", json=body("sim-openai/no-such-model"), headers=auth(owner))
    assert resp.status_code == 404
    bad_template = body()
    bad_template["target"]["prompt_template"] = "{{ input "
    assert (await api.post("/v1/evals/runs", json=bad_template, headers=auth(owner))).status_code == 422
    assert (
        await api.post("/v1/evals/runs", json=body(alert_channels=["nope"]), headers=auth(owner))
    ).status_code == 422
    assert (
        await api.post("/v1/evals/runs", json=body(dataset_id="missing"), headers=auth(owner))
    ).status_code == 404
    assert (
        await api.post("/v1/evals/runs", json=body(baseline_run_id="eval:x:y"), headers=auth(owner))
    ).status_code == 404
    assert (
        await api.post("/v1/evals/runs", json={**body(), "surprise": 1}, headers=auth(owner))
    ).status_code == 422


async def test_schedule_fires_on_time_twice_and_is_tenant_scoped(
    api: httpx.AsyncClient, api_worker: None, owner: str, make_key: MakeKey, tenant_id: str
) -> None:
    req = {"id": "every-2s", "run": body(), "interval_s": 2, "overlap": "buffer_one", "catchup_window_s": 60}
    resp = await api.post("/v1/evals/schedules", json=req, headers=auth(owner))
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["schedule_id"] == f"evals-schedule:{tenant_id}:every-2s"
    assert created["interval_s"] == [2.0]
    assert created["overlap"] == "buffer_one"
    assert (await api.post("/v1/evals/schedules", json=req, headers=auth(owner))).status_code == 409
    try:
        runs: list[dict[str, Any]] = []
        for _ in range(200):
            runs = (await api.get("/v1/evals/runs?schedule_id=every-2s", headers=auth(owner))).json()["data"]
            if len([r for r in runs if r["status"] == "completed"]) >= 2:
                break
            await asyncio.sleep(0.2)
        done = [r for r in runs if r["status"] == "completed"]
        assert len(done) >= 2, runs
        assert all(r["id"].startswith(f"eval:{tenant_id}:sched-every-2s-") for r in done)
        desc = (await api.get("/v1/evals/schedules/every-2s", headers=auth(owner))).json()
        recent = desc["recent_runs"]
        assert len(recent) >= 2
        for action in recent:  # each fired on time (started within 2 s of its scheduled time)
            late = _seconds(action["started_at"]) - _seconds(action["scheduled_at"])
            assert 0 <= late < 2.0
        spacing = _seconds(recent[1]["scheduled_at"]) - _seconds(recent[0]["scheduled_at"])
        assert spacing == 2.0  # two intervals apart, on the interval grid
        stranger = await make_key(f"{tenant_id}-x")
        assert (await api.get("/v1/evals/schedules/every-2s", headers=auth(stranger))).status_code == 404
        assert all(
            s["id"] != "every-2s"
            for s in (await api.get("/v1/evals/schedules", headers=auth(stranger))).json()
        )
        paused = await api.post("/v1/evals/schedules/every-2s/pause", headers=auth(owner))
        assert paused.json()["paused"] is True
        listed = (await api.get("/v1/evals/schedules", headers=auth(owner))).json()
        assert [s["id"] for s in listed] == ["every-2s"]
    finally:
        assert (await api.delete("/v1/evals/schedules/every-2s", headers=auth(owner))).status_code == 204
    assert (await api.get("/v1/evals/schedules/every-2s", headers=auth(owner))).status_code == 404


def _seconds(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value).timestamp()
