"""``/v1/datasets``: upload JSONL/CSV as immutable versions, list/paginate cases, errors, tenancy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest_asyncio

from tests.conftest import auth, psql
from tests.workflows.eval_support import DATASET

MakeKey = Callable[..., Awaitable[str]]
JSONL = {"Content-Type": "application/jsonl"}


@pytest_asyncio.fixture
async def owner(make_key: MakeKey, tenant_id: str) -> str:
    return await make_key(tenant_id)


async def _create(client: httpx.AsyncClient, key: str, dataset_id: str = "qa") -> None:
    resp = await client.post("/v1/datasets", json={"id": dataset_id, "name": "QA"}, headers=auth(key))
    assert resp.status_code == 201, resp.text


async def test_upload_versions_and_page_cases(client: httpx.AsyncClient, owner: str, pg_port: int) -> None:
    await _create(client, owner)
    resp = await client.post(
        "/v1/datasets/qa/versions?comment=golden",
        content=DATASET.read_bytes(),
        headers={**auth(owner), **JSONL},
    )
    assert resp.status_code == 201, resp.text
    v1 = resp.json()
    assert (v1["version"], v1["case_count"], v1["source"], v1["comment"]) == (1, 40, "upload", "golden")
    assert len(v1["digest"]) == 64

    csv = b"id,input,expected,tags\nc1,What is 2+2?,4,math|easy\nc2,Capital of France?,Paris,geo\n"
    resp = await client.post(
        "/v1/datasets/qa/versions", content=csv, headers={**auth(owner), "Content-Type": "text/csv"}
    )
    assert resp.status_code == 201, resp.text
    assert (resp.json()["version"], resp.json()["case_count"]) == (2, 2)

    # The same content gives the same digest (a new immutable version all the same).
    again = await client.post(
        "/v1/datasets/qa/versions?format=jsonl", content=DATASET.read_bytes(), headers=auth(owner)
    )
    assert again.json()["version"] == 3
    assert again.json()["digest"] == v1["digest"]

    versions = (await client.get("/v1/datasets/qa/versions", headers=auth(owner))).json()
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert (await client.get("/v1/datasets/qa", headers=auth(owner))).json()["latest_version"] == 3

    page = (await client.get("/v1/datasets/qa/versions/1/cases?limit=25", headers=auth(owner))).json()
    assert len(page["data"]) == 25
    assert page["data"][0]["id"] == "case-001"
    rest = (
        await client.get(
            f"/v1/datasets/qa/versions/1/cases?limit=25&cursor={page['next_cursor']}", headers=auth(owner)
        )
    ).json()
    assert len(rest["data"]) == 15
    assert rest["next_cursor"] is None
    assert rest["data"][-1]["id"] == "case-040"
    second = (await client.get("/v1/datasets/qa/versions/2/cases", headers=auth(owner))).json()
    assert second["data"][0]["tags"] == ["math", "easy"]

    # Versions are immutable at the database, too.
    result = psql(pg_port, "UPDATE eval_dataset_versions SET case_count = 0")
    assert result.returncode != 0
    assert "immutable" in result.stderr


async def test_bad_uploads_point_at_the_line(client: httpx.AsyncClient, owner: str) -> None:
    await _create(client, owner)
    bad = b'{"id": "a", "input": "x"}\n{"id": "b", "input": \n'
    resp = await client.post("/v1/datasets/qa/versions", content=bad, headers={**auth(owner), **JSONL})
    assert resp.status_code == 422
    assert resp.json()["line"] == 2
    dup = b'{"id": "a", "input": "x"}\n{"id": "a", "input": "y"}\n'
    resp = await client.post("/v1/datasets/qa/versions", content=dup, headers={**auth(owner), **JSONL})
    assert resp.status_code == 422
    assert "duplicate" in resp.json()["detail"]
    resp = await client.post(
        "/v1/datasets/qa/versions", content=b"x", headers={**auth(owner), "Content-Type": "text/plain"}
    )
    assert resp.status_code == 422
    assert (await client.post("/v1/datasets", json={"id": "qa"}, headers=auth(owner))).status_code == 409
    assert (
        await client.post("/v1/datasets", json={"id": "qa2", "extra": 1}, headers=auth(owner))
    ).status_code == 422
    resp = await client.post("/v1/datasets/qa/versions/from-logs", json={"limit": 10}, headers=auth(owner))
    assert resp.status_code == 422  # no logged calls with content
    assert (await client.get("/v1/datasets/qa/versions/1", headers=auth(owner))).status_code == 404


async def test_other_tenants_and_viewers(
    client: httpx.AsyncClient, owner: str, make_key: MakeKey, tenant_id: str
) -> None:
    await _create(client, owner)
    await client.post(
        "/v1/datasets/qa/versions", content=DATASET.read_bytes(), headers={**auth(owner), **JSONL}
    )
    stranger = await make_key(f"{tenant_id}-x")
    assert (await client.get("/v1/datasets/qa", headers=auth(stranger))).status_code == 404
    assert (await client.get("/v1/datasets/qa/versions/1/cases", headers=auth(stranger))).status_code == 404
    assert (await client.get("/v1/datasets", headers=auth(stranger))).json()["data"] == []
    viewer = await make_key(tenant_id, role="viewer")
    assert (await client.get("/v1/datasets/qa/versions/1", headers=auth(viewer))).status_code == 200
    resp = await client.post("/v1/datasets", json={"id": "mine"}, headers=auth(viewer))
    assert resp.status_code == 403
