"""Runs, probes, SSE and the codec endpoint over HTTP, with a real worker on the API's task queue."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.db.models import AuditEvent, ProbeSample
from core.temporal.client import connect
from tests.conftest import auth
from workers.main import build_worker

MakeKey = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture(scope="module")
async def api_worker(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    """A real worker on the task queue the API starts workflows on."""
    client = await connect(settings)
    redis = Redis.from_url(settings.redis.url)
    async with build_worker(client, settings, sessions, redis, settings.temporal.task_queue):
        yield
    await redis.aclose()


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["code"] == code
    return body


def url(run_id: str, suffix: str = "") -> str:
    return f"/v1/runs/{quote(run_id, safe='')}{suffix}"


async def wait_status(client: httpx.AsyncClient, key: str, run_id: str, *statuses: str) -> dict[str, Any]:
    for _ in range(200):
        resp = await client.get(url(run_id), headers=auth(key))
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {statuses}: {body}")


def sse_events(text: str) -> list[dict[str, str]]:
    """Parse an SSE body into events (id, event, data); pings/comments are skipped."""
    out: list[dict[str, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "event" in fields:
            out.append(fields)
    return out


@pytest_asyncio.fixture
async def owner(make_key: MakeKey, tenant_id: str) -> str:
    return await make_key(tenant_id)


async def start_probe(client: httpx.AsyncClient, key: str, **headers: str) -> dict[str, Any]:
    resp = await client.post("/v1/probes/runs", json={}, headers={**auth(key), **headers})
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_probe_run_completes_with_samples_events_and_audit(
    client: httpx.AsyncClient,
    api_worker: None,
    owner: str,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    started = await start_probe(client, owner)
    run_id = started["id"]
    assert run_id.startswith(f"probe:{tenant_id}:")
    assert started["status"] == "running"
    assert started["input_summary"]["check_postgres"] is True

    done = await wait_status(client, owner, run_id, "completed")
    assert done["result"]["ok"] is True
    # Postgres, Redis and every configured provider endpoint (here: the simulated ones).
    targets = {s["target"] for s in done["result"]["samples"]}
    assert {
        "postgres",
        "redis",
        "provider.sim-openai",
        "provider.sim-anthropic",
        "provider.sim-gemini",
    } <= targets
    assert all(s["ok"] for s in done["result"]["samples"])
    types = [e["type"] for e in done["events"]]
    assert types[0] == "run.started"
    assert types[-1] == "run.completed"
    assert done["closed_at"] is not None

    samples = await client.get("/v1/probes/samples", headers=auth(owner))
    assert samples.status_code == 200
    assert {s["target"] for s in samples.json()["data"]} == targets

    async with sessions() as s:
        actions = (
            await s.execute(
                select(AuditEvent.action).where(
                    AuditEvent.tenant_id == tenant_id, AuditEvent.target == run_id
                )
            )
        ).scalars()
        assert list(actions) == ["run.start"]


async def test_idempotency_key_double_submit_returns_same_run(
    client: httpx.AsyncClient,
    api_worker: None,
    owner: str,
    make_key: MakeKey,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = f"idem-{uuid.uuid4()}"
    first, second = await asyncio.gather(
        start_probe(client, owner, **{"Idempotency-Key": key}),
        start_probe(client, owner, **{"Idempotency-Key": key}),
    )
    assert first["id"] == second["id"]
    done = await wait_status(client, owner, first["id"], "completed")
    third = await start_probe(client, owner, **{"Idempotency-Key": key})
    assert third["id"] == first["id"]
    assert third["status"] == "completed"
    async with sessions() as s:
        rows = (await s.execute(select(ProbeSample).where(ProbeSample.workflow_id == first["id"]))).scalars()
        assert len(list(rows)) == len(done["result"]["samples"])

    # The same key in another tenant is another run.
    other = await make_key(f"t-{uuid.uuid4().hex[:10]}")
    foreign = await start_probe(client, other, **{"Idempotency-Key": key})
    assert foreign["id"] != first["id"]


async def test_list_filters_and_cursor_pagination(
    client: httpx.AsyncClient, api_worker: None, owner: str
) -> None:
    ids = [(await start_probe(client, owner))["id"] for _ in range(3)]
    for run_id in ids:
        await wait_status(client, owner, run_id, "completed")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "kind": "probe", "status": "completed"}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/runs", params=params, headers=auth(owner))).json()
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    empty = await client.get("/v1/runs", params={"status": "failed"}, headers=auth(owner))
    assert empty.json() == {"data": [], "next_cursor": None}
    assert (await client.get("/v1/runs", params={"kind": "nexus"}, headers=auth(owner))).json()["data"] == []
    assert_problem(
        await client.get("/v1/runs", params={"cursor": "%%%"}, headers=auth(owner)), 400, "bad_request"
    )
    assert_problem(
        await client.get("/v1/runs", params={"status": "nope"}, headers=auth(owner)), 422, "validation_error"
    )


async def test_sse_replays_stored_events_and_resumes(
    client: httpx.AsyncClient, api_worker: None, owner: str
) -> None:
    run_id = (await start_probe(client, owner))["id"]
    # The stream follows the run live and ends at the terminal event.
    resp = await client.get(url(run_id, "/events"), headers=auth(owner))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event"] == "run.started"
    assert events[-1]["event"] == "run.completed"
    assert json.loads(events[-1]["data"])["type"] == "run.completed"

    resumed = await client.get(url(run_id, "/events"), headers={**auth(owner), "Last-Event-ID": "2"})
    tail = sse_events(resumed.text)
    assert [e["id"] for e in tail] == [e["id"] for e in events[2:]]

    # Resuming after the last event of a closed run ends at once with nothing to send.
    last = events[-1]["id"]
    done = await client.get(url(run_id, "/events"), headers={**auth(owner), "Last-Event-ID": last})
    assert sse_events(done.text) == []
    bad = await client.get(url(run_id, "/events"), headers={**auth(owner), "Last-Event-ID": "x"})
    assert_problem(bad, 400, "bad_request")


async def test_cancel_running_and_closed_runs(
    client: httpx.AsyncClient,
    api_worker: None,
    owner: str,
    tenant_id: str,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # A run whose workflow waits on a queue with no worker stays running until cancelled.
    from core.contracts import ProbeInput, RunKind
    from core.runs import RunRepository

    temporal = await connect(settings)
    wid = f"probe:{tenant_id}:{uuid.uuid4().hex[:8]}"
    async with sessions() as s, s.begin():
        await RunRepository.from_session(s).create(
            tenant_id=tenant_id, workflow_id=wid, kind=RunKind.probe.value, created_by="test"
        )
    handle = await temporal.start_workflow(
        "Probe", ProbeInput(tenant_id=tenant_id), id=wid, task_queue=f"idle-{uuid.uuid4().hex[:8]}"
    )
    resp = await client.post(url(wid, "/cancel"), headers=auth(owner))
    assert resp.status_code == 202, resp.text
    assert resp.json()["cancel_requested"] is True
    desc = await handle.describe()
    assert desc.status is not None
    async with sessions() as s:
        actions = list((await s.execute(select(AuditEvent.action).where(AuditEvent.target == wid))).scalars())
    assert actions == ["run.cancel"]

    completed = await start_probe(client, owner)
    await wait_status(client, owner, completed["id"], "completed")
    assert_problem(await client.post(url(completed["id"], "/cancel"), headers=auth(owner)), 409, "conflict")


async def test_cancel_reaches_the_workflow(
    client: httpx.AsyncClient,
    api_worker: None,
    owner: str,
    tenant_id: str,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Cancelling a run stuck in a check: the workflow records run.cancelled and closes its row."""
    from core.contracts import HttpTarget, ProbeInput, RunKind
    from core.runs import RunRepository

    hang = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hang.wait()  # never answers: the probe waits for its timeout
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    temporal = await connect(settings)
    wid = f"probe:{tenant_id}:{uuid.uuid4().hex[:8]}"
    async with sessions() as s, s.begin():
        await RunRepository.from_session(s).create(
            tenant_id=tenant_id, workflow_id=wid, kind=RunKind.probe.value, created_by="test"
        )
    try:
        await temporal.start_workflow(
            "Probe",
            ProbeInput(
                tenant_id=tenant_id,
                targets=[HttpTarget(name="slow", url=f"http://127.0.0.1:{port}/")],
                timeout_s=30,
            ),
            id=wid,
            task_queue=settings.temporal.task_queue,
        )
        await asyncio.sleep(0.5)
        assert (await client.post(url(wid, "/cancel"), headers=auth(owner))).status_code == 202
        body = await wait_status(client, owner, wid, "cancelled")
        assert body["events"][-1]["type"] == "run.cancelled"
        stream = await client.get(url(wid, "/events"), headers=auth(owner))
        assert sse_events(stream.text)[-1]["event"] == "run.cancelled"
    finally:
        hang.set()
        server.close()


async def test_other_tenants_run_is_not_found(
    client: httpx.AsyncClient, api_worker: None, owner: str, make_key: MakeKey
) -> None:
    run_id = (await start_probe(client, owner))["id"]
    intruder = await make_key(f"t-{uuid.uuid4().hex[:10]}")
    assert_problem(await client.get(url(run_id), headers=auth(intruder)), 404, "not_found")
    assert_problem(await client.post(url(run_id, "/cancel"), headers=auth(intruder)), 404, "not_found")
    assert_problem(await client.get(url(run_id, "/events"), headers=auth(intruder)), 404, "not_found")
    listed = (await client.get("/v1/runs", headers=auth(intruder))).json()
    assert run_id not in [r["id"] for r in listed["data"]]
    assert_problem(await client.get(url("probe:nobody:x"), headers=auth(owner)), 404, "not_found")


async def test_probe_body_validation_and_permissions(
    client: httpx.AsyncClient, owner: str, make_key: MakeKey, tenant_id: str
) -> None:
    resp = await client.post(
        "/v1/probes/runs",
        json={"targets": [{"name": "x", "url": "http://169.254.169.254/"}]},
        headers=auth(owner),
    )
    body = assert_problem(resp, 422, "validation_error")
    assert "169.254" not in resp.text
    assert body["errors"]
    viewer = await make_key(tenant_id, role="viewer")
    assert_problem(await client.post("/v1/probes/runs", json={}, headers=auth(viewer)), 403, "forbidden")
    assert_problem(await client.post("/v1/probes/runs", json={}), 401, "unauthenticated")
    bad_key = await client.post("/v1/probes/runs", json={}, headers={**auth(owner), "Idempotency-Key": "a b"})
    assert_problem(bad_key, 422, "validation_error")


async def test_schedules_create_list_delete(client: httpx.AsyncClient, owner: str, make_key: MakeKey) -> None:
    resp = await client.post(
        "/v1/probes/schedules",
        json={"name": "every-minute", "interval_s": 60, "paused": True},
        headers=auth(owner),
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["id"].endswith(":every-minute")
    dup = await client.post(
        "/v1/probes/schedules", json={"name": "every-minute", "interval_s": 60}, headers=auth(owner)
    )
    assert_problem(dup, 409, "conflict")
    both = await client.post(
        "/v1/probes/schedules", json={"name": "x", "interval_s": 60, "cron": "0 * * * *"}, headers=auth(owner)
    )
    assert_problem(both, 422, "validation_error")
    cron = await client.post(
        "/v1/probes/schedules",
        json={"name": "hourly", "cron": "0 * * * *", "paused": True},
        headers=auth(owner),
    )
    assert cron.status_code == 201, cron.text

    names: list[str] = []
    for _ in range(100):  # schedule visibility is eventually consistent
        names = [s["name"] for s in (await client.get("/v1/probes/schedules", headers=auth(owner))).json()]
        if names == ["every-minute", "hourly"]:
            break
        await asyncio.sleep(0.1)
    assert names == ["every-minute", "hourly"]
    other = await make_key(f"t-{uuid.uuid4().hex[:10]}")
    assert (await client.get("/v1/probes/schedules", headers=auth(other))).json() == []
    assert_problem(await client.delete("/v1/probes/schedules/hourly", headers=auth(other)), 404, "not_found")

    for name in ("every-minute", "hourly"):
        assert (await client.delete(f"/v1/probes/schedules/{name}", headers=auth(owner))).status_code == 204
    assert_problem(await client.delete("/v1/probes/schedules/hourly", headers=auth(owner)), 404, "not_found")


# --- codec endpoint -------------------------------------------------------------------------


def _payloads(*items: tuple[dict[str, bytes], bytes]) -> dict[str, Any]:
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in meta.items()},
                "data": base64.b64encode(data).decode(),
            }
            for meta, data in items
        ]
    }


async def test_codec_round_trip_and_auth(
    client: httpx.AsyncClient, owner: str, make_key: MakeKey, tenant_id: str, settings: Settings
) -> None:
    plain = _payloads(({"encoding": b"json/plain"}, b'{"prompt":"secret"}'))
    ns = {"X-Namespace": settings.temporal.namespace}
    operator = await make_key(f"op-{tenant_id}", platform=True)
    # The namespace is shared by all tenants: a tenant's own owner may not decrypt with it.
    assert_problem(
        await client.post("/codec/decode", json=plain, headers={**ns, **auth(owner)}), 403, "forbidden"
    )
    assert_problem(await client.post("/codec/decode", json=plain, headers=ns), 401, "unauthenticated")
    viewer = await make_key(tenant_id, role="viewer")
    assert_problem(
        await client.post("/codec/decode", json=plain, headers={**ns, **auth(viewer)}), 403, "forbidden"
    )
    wrong_ns = await client.post(
        "/codec/decode", json=plain, headers={**auth(operator), "X-Namespace": "other"}
    )
    assert_problem(wrong_ns, 403, "forbidden")

    enc = await client.post("/codec/encode", json=plain, headers={**ns, **auth(operator)})
    assert enc.status_code == 200, enc.text
    sealed = enc.json()["payloads"][0]
    assert base64.b64decode(sealed["metadata"]["encoding"]) == b"binary/encrypted"
    assert b"secret" not in base64.b64decode(sealed["data"])

    dec = await client.post("/codec/decode", json=enc.json(), headers={**ns, **auth(operator)})
    assert dec.status_code == 200, dec.text
    assert dec.json() == plain
    # Unencrypted payloads pass through decode unchanged.
    passthrough = await client.post("/codec/decode", json=plain, headers={**ns, **auth(operator)})
    assert passthrough.json() == plain

    tampered = enc.json()
    raw = bytearray(base64.b64decode(tampered["payloads"][0]["data"]))
    raw[-1] ^= 1
    tampered["payloads"][0]["data"] = base64.b64encode(bytes(raw)).decode()
    assert_problem(
        await client.post("/codec/decode", json=tampered, headers={**ns, **auth(operator)}),
        400,
        "bad_request",
    )
    garbage = await client.post("/codec/decode", content=b"not json", headers={**ns, **auth(operator)})
    assert_problem(garbage, 400, "bad_request")


async def test_codec_cors_for_temporal_ui(client: httpx.AsyncClient, settings: Settings) -> None:
    origin = settings.temporal.ui_url.rstrip("/")
    pre = await client.options(
        "/codec/decode",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == origin
    assert "x-namespace" in pre.headers["access-control-allow-headers"].lower()
    # An error still carries CORS headers so the UI can show it.
    denied = await client.post("/codec/decode", json={"payloads": []}, headers={"Origin": origin})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == origin
    evil = await client.options("/codec/decode", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in evil.headers
