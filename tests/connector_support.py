"""Shared fixtures of the connector-jobs tests: vendor simulators, settings that allow them,
an API client on those settings, and helpers to create connections and jobs.

The simulators are the real ASGI apps from ``connectors/simulators`` served over HTTP(S) on
127.0.0.1 in a thread of the test process (a worker subprocess reaches them over TCP too).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from connectors.simulators.salesforce import SalesforceSimulator
from connectors.simulators.serve import RunningSimulator, start
from connectors.simulators.servicenow import ServiceNowSimulator
from core.config import Settings
from tests.conftest import auth

MakeKey = Callable[..., Awaitable[str]]

SN_PASSWORD = "sn-secret-Zq81xY"  # distinctive, so the secrets test can search for it
SF_SECRET = "sf-secret-Kp29wQ"


def connector_settings(settings: Settings, ca_bundle: str = "", pages_per_run: int = 100) -> Settings:
    """A copy of the session settings that lets connections reach 127.0.0.1."""
    copy = settings.model_copy(deep=True)
    copy.connectors.allowed_hosts = ["127.0.0.1"]
    copy.connectors.ca_bundle = ca_bundle
    copy.connectors.pages_per_run = pages_per_run
    copy.temporal.task_queue = f"connectors-{uuid.uuid4().hex[:10]}"  # a fresh queue per module
    return copy


@pytest.fixture(scope="module")
def servicenow_sim() -> Iterator[RunningSimulator]:
    with start(ServiceNowSimulator(records=57, password=SN_PASSWORD)) as sim:
        yield sim


@pytest.fixture(scope="module")
def salesforce_sim() -> Iterator[RunningSimulator]:
    with start(SalesforceSimulator(records=10, client_secret=SF_SECRET), tls=True) as sim:
        yield sim


@pytest.fixture(scope="module")
def conn_settings(settings: Settings, salesforce_sim: RunningSimulator) -> Settings:
    return connector_settings(settings, ca_bundle=salesforce_sim.ca_path or "")


@pytest_asyncio.fixture(scope="module")
async def conn_api(conn_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API on settings that allow 127.0.0.1 connections."""
    from asgi_lifespan import LifespanManager

    from api.app import create_app

    application = create_app(conn_settings)
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as http:
            yield http


def servicenow_body(sim: RunningSimulator, name: str = "snow", password: str = SN_PASSWORD) -> dict[str, Any]:
    return {
        "name": name,
        "type": "servicenow",
        "config": {"instance_url": sim.base_url},
        "credentials": {"username": "integration", "password": password},
    }


def salesforce_body(sim: RunningSimulator, name: str = "sfdc", secret: str = SF_SECRET) -> dict[str, Any]:
    return {
        "name": name,
        "type": "salesforce",
        "config": {"login_url": sim.base_url},
        "credentials": {"client_id": "nexus-client", "client_secret": secret},
    }


async def create_connection(api: httpx.AsyncClient, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post("/v1/connections", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest_asyncio.fixture(scope="module")
async def conn_worker(conn_settings: Settings, sessions: Any) -> AsyncIterator[None]:
    """The production worker wiring on the module's task queue and connector settings."""
    from redis.asyncio import Redis

    from core.temporal.client import connect
    from workers.main import build_worker

    client = await connect(conn_settings)
    redis = Redis.from_url(conn_settings.redis.url)
    async with build_worker(client, conn_settings, sessions, redis, conn_settings.temporal.task_queue):
        yield
    await redis.aclose()


async def create_job(api: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/connector-jobs", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def start_run(api: httpx.AsyncClient, key: str, job_id: str) -> str:
    response = await api.post(f"/v1/connector-jobs/{job_id}/runs", headers=auth(key))
    assert response.status_code == 202, response.text
    wid: str = response.json()["id"]
    return wid


async def wait_run(api: httpx.AsyncClient, key: str, wid: str, within: float = 120) -> dict[str, Any]:
    """Poll ``/v1/runs/{id}`` until the run is final (its row is closed by the workflow)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        response = await api.get(f"/v1/runs/{wid}", headers=auth(key))
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        if run["status"] not in ("running", "continued_as_new"):
            return run
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {wid} still {run['status']}")
        await asyncio.sleep(0.2)


def payload_texts(node: Any) -> list[str]:
    """Every payload of a history's JSON form, decoded (payload data is base64 there)."""
    found: list[str] = []
    if isinstance(node, dict):
        if "metadata" in node and isinstance(node.get("data"), str):
            found.append(base64.b64decode(node["data"]).decode("utf-8", "replace"))
        for value in node.values():
            found += payload_texts(value)
    elif isinstance(node, list):
        for value in node:
            found += payload_texts(value)
    return found
