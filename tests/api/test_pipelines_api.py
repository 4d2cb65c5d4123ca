"""``/v1/pipelines``: definitions, versions, diff, schema, validation errors, runs, retry, cancel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
import yaml
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.temporal.client import connect
from tests.conftest import auth
from tests.workflows.pipeline_support import Receiver, http_step, pipeline_settings, receiver
from workers.main import build_worker

MakeKey = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose pipeline settings allowlist 127.0.0.1 (the local receiver)."""
    from asgi_lifespan import LifespanManager

    from api.app import create_app

    application = create_app(pipeline_settings(settings))
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
            yield http


@pytest_asyncio.fixture(scope="module")
async def api_worker(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    client = await connect(settings)
    redis = Redis.from_url(settings.redis.url)
    async with build_worker(
        client, pipeline_settings(settings), sessions, redis, settings.temporal.task_queue
    ):
        yield
    await redis.aclose()


@pytest_asyncio.fixture(scope="module")
async def recv() -> AsyncIterator[Receiver]:
    async with receiver() as r:
        yield r


@pytest_asyncio.fixture
async def owner(make_key: MakeKey, tenant_id: str) -> str:
    return await make_key(tenant_id)


def simple(pid: str = "greet") -> dict[str, Any]:
    return {
        "id": pid,
        "name": "Greeter",
        "inputs": {"who": {"type": "string"}, "times": {"type": "integer", "required": False, "default": 1}},
        "steps": [
            {"id": "hello", "type": "transform", "expression": "join(' ', ['hello', inputs.who])"},
            {"id": "shout", "type": "transform", "expression": "steps.hello.output"},
        ],
        "outputs": {"text": "{{ steps.shout.output }}"},
    }


def run_url(run_id: str, suffix: str = "") -> str:
    return f"/v1/runs/{quote(run_id, safe='')}{suffix}"


async def wait_closed(api: httpx.AsyncClient, key: str, run_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(300):
        resp = await api.get(run_url(run_id), headers=auth(key))
        assert resp.status_code == 200, resp.text
        out = resp.json()
        if out["closed_at"] is not None:
            return out
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish: {out}")


async def test_create_version_list_get_diff_and_schema(api: httpx.AsyncClient, owner: str) -> None:
    created = await api.post("/v1/pipelines", json=simple(), headers=auth(owner))
    assert created.status_code == 201, created.text
    assert created.json()["latest_version"] == 1
    dup = await api.post("/v1/pipelines", json=simple(), headers=auth(owner))
    assert dup.status_code == 409
    v2 = simple()
    v2["steps"][1]["expression"] = "[steps.hello.output]"
    v2["steps"].append({"id": "extra", "type": "wait", "seconds": 1})
    text = yaml.safe_dump({**v2, "comment": "second"})
    version = await api.post(
        "/v1/pipelines/greet/versions",
        content=text,
        headers={**auth(owner), "Content-Type": "application/yaml"},
    )
    assert version.status_code == 201, version.text
    assert version.json()["version"] == 2
    assert version.json()["comment"] == "second"
    listed = (await api.get("/v1/pipelines", headers=auth(owner))).json()
    assert [p["id"] for p in listed["data"]] == ["greet"]
    one = (await api.get("/v1/pipelines/greet", headers=auth(owner))).json()
    assert one["latest_version"] == 2
    assert one["latest"]["definition"]["steps"][-1]["id"] == "extra"
    versions = (await api.get("/v1/pipelines/greet/versions", headers=auth(owner))).json()
    assert [v["version"] for v in versions] == [1, 2]
    first = (await api.get("/v1/pipelines/greet/versions/1", headers=auth(owner))).json()
    assert "hello" in first["canonical_yaml"]
    diff = (await api.get("/v1/pipelines/greet/diff?from=1&to=2", headers=auth(owner))).json()
    assert diff["unified"].startswith("--- v1\n+++ v2\n")
    assert "+- id: extra\n" in diff["unified"]
    assert diff["summary"]["added"] == [{"id": "extra", "type": "wait", "fields": []}]
    assert [c["id"] for c in diff["summary"]["changed"]] == ["shout"]
    assert diff["summary"]["removed"] == []
    schema = (await api.get("/v1/pipelines/schema")).json()
    assert schema["title"] == "PipelineDefinition"
    assert "steps" in schema["properties"]


@pytest.mark.parametrize(
    ("step", "offending", "message"),
    [
        ({"id": "bad", "type": "teleport"}, "bad", "unknown step type"),
        ({"id": "bad", "type": "transform", "expression": "steps.bad.output"}, "bad", "cycle"),
        ({"id": "bad", "type": "transform", "expression": "steps.later.output"}, "bad", "cycle"),
        ({"id": "bad", "type": "sub_pipeline", "pipeline": "checked"}, "bad", "cycle"),
        (
            {"id": "bad", "type": "llm", "model": "m", "prompt": "{{ inputs.nope }}"},
            "bad",
            "missing variable",
        ),
        (
            {"id": "bad", "type": "llm", "model": "m", "prompt": "{{ steps.ghost.output }}"},
            "bad",
            "unknown step",
        ),
        ({"id": "bad", "type": "transform", "expression": "foo[[["}, "bad", "invalid JMESPath"),
        ({"id": "bad", "type": "llm", "model": "m", "prompt": "{% if %}"}, "bad", "template syntax"),
        (
            {"id": "bad", "type": "http", "url": "http://169.254.169.254/latest/meta-data"},
            "bad",
            "link-local",
        ),
        ({"id": "bad", "type": "http", "url": "http://10.1.2.3/hook"}, "bad", "private"),
        ({"id": "first", "type": "wait", "seconds": 1}, "first", "duplicate"),
    ],
)
async def test_invalid_definitions_point_at_the_offending_step(
    api: httpx.AsyncClient, owner: str, step: dict[str, Any], offending: str, message: str
) -> None:
    doc = {
        "id": "checked",
        "name": "checked",
        "steps": [
            {"id": "first", "type": "wait", "seconds": 1},
            step,
            {"id": "later", "type": "wait", "seconds": 1},
        ],
    }
    resp = await api.post("/v1/pipelines", json=doc, headers=auth(owner))
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    errors = resp.json()["errors"]
    assert any(e["step"] == offending and message in e["message"] for e in errors), errors


async def test_run_completes_and_shows_progress(api: httpx.AsyncClient, api_worker: None, owner: str) -> None:
    assert (await api.post("/v1/pipelines", json=simple(), headers=auth(owner))).status_code == 201
    started = await api.post("/v1/pipelines/greet/runs", json={"inputs": {"who": "ada"}}, headers=auth(owner))
    assert started.status_code == 202, started.text
    run = await wait_closed(api, owner, started.json()["id"])
    assert run["kind"] == "pipeline"
    assert run["status"] == "completed"
    assert run["result"]["outputs"] == {"text": "hello ada"}
    assert run["result"]["progress"] == {"hello": "completed", "shout": "completed"}
    assert run["input_summary"]["input_names"] == ["times", "who"]
    types = [e["type"] for e in run["events"]]
    assert types[0] == "run.started"
    assert types[-1] == "run.completed"
    assert types.count("step.completed") == 2


async def test_inputs_are_checked_and_idempotency_key_returns_the_same_run(
    api: httpx.AsyncClient, api_worker: None, owner: str
) -> None:
    await api.post("/v1/pipelines", json=simple(), headers=auth(owner))
    missing = await api.post("/v1/pipelines/greet/runs", json={"inputs": {}}, headers=auth(owner))
    assert missing.status_code == 422
    assert missing.json()["errors"] == [{"input": "who", "message": "required input is missing"}]
    wrong = await api.post("/v1/pipelines/greet/runs", json={"inputs": {"who": 3}}, headers=auth(owner))
    assert wrong.status_code == 422
    assert "'who'" in wrong.json()["detail"]
    headers = {**auth(owner), "Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    one = await api.post("/v1/pipelines/greet/runs", json={"inputs": {"who": "x"}}, headers=headers)
    two = await api.post("/v1/pipelines/greet/runs", json={"inputs": {"who": "x"}}, headers=headers)
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] == two.json()["id"]
    assert two.headers["Idempotent-Replayed"] == "true"
    await wait_closed(api, owner, one.json()["id"])


async def test_another_tenant_gets_404(
    api: httpx.AsyncClient, api_worker: None, owner: str, make_key: MakeKey
) -> None:
    await api.post("/v1/pipelines", json=simple(), headers=auth(owner))
    run = (
        await api.post("/v1/pipelines/greet/runs", json={"inputs": {"who": "x"}}, headers=auth(owner))
    ).json()
    other = await make_key(f"t-{uuid.uuid4().hex[:10]}")
    for method, url in [
        ("GET", "/v1/pipelines/greet"),
        ("GET", "/v1/pipelines/greet/versions"),
        ("GET", "/v1/pipelines/greet/versions/1"),
        ("GET", "/v1/pipelines/greet/diff?from=1&to=1"),
        ("POST", "/v1/pipelines/greet/versions"),
        ("POST", "/v1/pipelines/greet/runs"),
        ("GET", run_url(run["id"])),
        ("POST", f"/v1/pipelines/greet/runs/{quote(run['id'], safe='')}/retry"),
    ]:
        body = {"inputs": {"who": "x"}} if url.endswith("/runs") else simple() if "versions" in url else None
        resp = await api.request(method, url, json=body, headers=auth(other))
        assert resp.status_code == 404, (url, resp.text)
    assert (await api.get("/v1/pipelines", headers=auth(other))).json()["data"] == []
    await wait_closed(api, owner, run["id"])


async def test_retry_from_the_failed_step_reuses_earlier_outputs(
    api: httpx.AsyncClient, api_worker: None, owner: str, recv: Receiver
) -> None:
    path = f"/flaky-{uuid.uuid4().hex[:6]}"
    doc = {
        "id": "flaky",
        "name": "flaky",
        "steps": [
            http_step("first", recv.url + "/first-" + path.strip("/")),
            http_step(
                "second",
                recv.url + path,
                retry={"max_attempts": 1},
                body={"seen": "{{ steps.first.output.status }}"},
            ),
        ],
    }
    assert (await api.post("/v1/pipelines", json=doc, headers=auth(owner))).status_code == 201
    recv.reject.add(path)
    first = (await api.post("/v1/pipelines/flaky/runs", json={}, headers=auth(owner))).json()
    failed = await wait_closed(api, owner, first["id"])
    assert failed["status"] == "failed"
    assert failed["result"]["failed_step"] == "second"
    recv.reject.discard(path)
    retried = await api.post(
        f"/v1/pipelines/flaky/runs/{quote(first['id'], safe='')}/retry", headers=auth(owner)
    )
    assert retried.status_code == 202, retried.text
    done = await wait_closed(api, owner, retried.json()["id"])
    assert done["status"] == "completed"
    assert done["result"]["steps"]["first"]["reused"] is True
    assert [e["data"].get("step") for e in done["events"] if e["type"] == "step.skipped"] == ["first"]
    assert recv.paths().count("/first-" + path.strip("/")) == 1
    assert [c.status for c in recv.calls if c.path == path] == [400, 200]
    again = await api.post(
        f"/v1/pipelines/flaky/runs/{quote(done['id'], safe='')}/retry", headers=auth(owner)
    )
    assert again.status_code == 409


async def test_cancel_through_runs_api_compensates(
    api: httpx.AsyncClient, api_worker: None, owner: str, recv: Receiver
) -> None:
    tag = uuid.uuid4().hex[:6]
    doc = {
        "id": "booking",
        "name": "booking",
        "steps": [
            http_step(
                "book", f"{recv.url}/book-{tag}", compensation=http_step("unbook", f"{recv.url}/unbook-{tag}")
            ),
            {"id": "hold", "type": "wait", "seconds": 3600},
        ],
    }
    assert (await api.post("/v1/pipelines", json=doc, headers=auth(owner))).status_code == 201
    run = (await api.post("/v1/pipelines/booking/runs", json={}, headers=auth(owner))).json()
    for _ in range(100):
        detail = (await api.get(run_url(run["id"]), headers=auth(owner))).json()
        if any(e["type"] == "step.started" and e["data"].get("step") == "hold" for e in detail["events"]):
            break
        await asyncio.sleep(0.1)
    cancelled = await api.post(run_url(run["id"], "/cancel"), headers=auth(owner))
    assert cancelled.status_code == 202
    done = await wait_closed(api, owner, run["id"])
    assert done["status"] == "compensated"
    assert recv.paths().count(f"/unbook-{tag}") == 1
