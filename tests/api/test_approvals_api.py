"""``/v1/approvals`` over HTTP with a real worker on the API's task queue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.db.models import AuditEvent
from core.temporal.client import connect
from tests.api.approvals_support import approvals_app, user_key
from tests.api.test_runs_api import assert_problem, url, wait_status
from tests.conftest import auth
from workers.main import build_worker

MakeKey = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """This module's own app, so the approval routes are mounted whatever ``create_app`` does."""
    async with approvals_app(settings) as (_, http):
        yield http


@pytest_asyncio.fixture(scope="module")
async def api_worker(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    client = await connect(settings)
    redis = Redis.from_url(settings.redis.url)
    async with build_worker(client, settings, sessions, redis, settings.temporal.task_queue):
        yield
    await redis.aclose()


async def create(client: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    payload = {"title": "Ship it", "assignees": {"roles": ["approver"]}, **body}
    resp = await client.post("/v1/approvals", json=payload, headers=auth(key))
    assert resp.status_code == 202, resp.text
    out: dict[str, Any] = resp.json()
    return out


def ids(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {a["id"] for a in resp.json()["data"]}


async def test_inbox_is_scoped_to_role_user_and_tenant(
    client: httpx.AsyncClient,
    api_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    owner = await make_key(tenant_id)
    approver = await make_key(tenant_id, role="approver")
    developer = await make_key(tenant_id, role="developer")
    carol = await user_key(sessions, settings, tenant_id, "carol@example.com", "developer")
    stranger = await make_key(f"t-{uuid.uuid4().hex[:10]}")

    by_role = await create(client, owner, title="By role")
    by_user = await create(client, owner, title="By user", assignees={"users": ["Carol@Example.com"]})
    assert by_role["status"] == "pending"
    assert by_role["workflow_id"] == f"approval:{tenant_id}:{by_role['id']}"

    pending = "/v1/approvals?status=pending"
    assert ids(await client.get(pending, headers=auth(approver))) == {by_role["id"]}
    assert ids(await client.get(pending, headers=auth(carol))) == {by_user["id"]}
    assert ids(await client.get(pending, headers=auth(developer))) == set()
    assert ids(await client.get(pending, headers=auth(owner))) == {by_role["id"], by_user["id"]}
    assert ids(await client.get(pending, headers=auth(stranger))) == set()

    assert_problem(
        await client.get(f"/v1/approvals/{by_role['id']}", headers=auth(stranger)), 404, "not_found"
    )
    assert_problem(
        await client.get(f"/v1/approvals/{by_role['id']}", headers=auth(developer)), 404, "not_found"
    )
    detail = await client.get(f"/v1/approvals/{by_user['id']}", headers=auth(carol))
    assert detail.status_code == 200
    # Carol sees what names her, but her developer key lacks approvals:decide.
    assert detail.json()["can_decide"] is False

    # Clean up: the owner may always decide.
    for item in (by_role, by_user):
        resp = await client.post(
            f"/v1/approvals/{item['id']}/decision", json={"decision": "reject"}, headers=auth(owner)
        )
        assert resp.status_code == 200, resp.text


async def test_decision_completes_run_and_writes_audit(
    client: httpx.AsyncClient,
    api_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    owner = await make_key(tenant_id)
    approver = await make_key(tenant_id, role="approver")
    item = await create(client, owner, context_markdown="Send **this**")
    body = {"decision": "approve", "comment": "fine", "decision_id": "dec-1"}
    first = await client.post(f"/v1/approvals/{item['id']}/decision", json=body, headers=auth(approver))
    assert first.status_code == 200, first.text
    decided = first.json()
    assert decided["status"] == "approved"
    assert decided["decision"]["comment"] == "fine"
    assert decided["decision"]["decision_id"] == "dec-1"
    # The same decision id again answers the applied decision (also after the run closed).
    again = await client.post(f"/v1/approvals/{item['id']}/decision", json=body, headers=auth(approver))
    assert again.status_code == 200, again.text
    assert again.json()["decision"] == decided["decision"]
    other = {"decision": "reject", "decision_id": "dec-2"}
    conflict = await client.post(f"/v1/approvals/{item['id']}/decision", json=other, headers=auth(approver))
    assert_problem(conflict, 409, "conflict")

    run = await wait_status(client, owner, item["workflow_id"], "completed")
    assert run["kind"] == "approval"
    assert run["result"]["status"] == "approved"
    assert url(item["workflow_id"])
    history = await client.get("/v1/approvals?status=approved", headers=auth(approver))
    assert item["id"] in ids(history)

    async with sessions() as s:
        rows = (
            await s.execute(
                select(AuditEvent.action, AuditEvent.actor).where(
                    AuditEvent.tenant_id == tenant_id, AuditEvent.target == item["workflow_id"]
                )
            )
        ).all()
    actions = [a for a, _ in rows]
    assert actions.count("approval.decide") == 1
    assert "approval.request" in actions
    decide_actor = next(actor for action, actor in rows if action == "approval.decide")
    assert decide_actor.startswith("key:")
    assert decide_actor == decided["decision"]["actor"]


async def test_refusals_viewer_non_assignee_other_tenant_and_bad_bodies(
    client: httpx.AsyncClient, api_worker: None, make_key: MakeKey, tenant_id: str
) -> None:
    owner = await make_key(tenant_id)
    viewer = await make_key(tenant_id, role="viewer")
    developer = await make_key(tenant_id, role="developer")
    other_owner = await make_key(f"t-{uuid.uuid4().hex[:10]}")
    item = await create(client, owner)
    path = f"/v1/approvals/{item['id']}/decision"
    approve = {"decision": "approve"}

    body = assert_problem(await client.post(path, json=approve, headers=auth(viewer)), 403, "forbidden")
    assert "approvals:decide" in body["detail"]
    body = assert_problem(await client.post(path, json=approve, headers=auth(developer)), 403, "forbidden")
    assert "lacks permission" in body["detail"]
    assert_problem(await client.post(path, json=approve, headers=auth(other_owner)), 404, "not_found")
    assert_problem(
        await client.post(path, json={"decision": "maybe"}, headers=auth(owner)), 422, "validation_error"
    )
    assert_problem(
        await client.post(path, json={"decision": "approve", "extra": 1}, headers=auth(owner)),
        422,
        "validation_error",
    )
    bad_channel = {"title": "x", "assignees": {"roles": ["approver"]}, "notify": [{"channel": "nope"}]}
    assert_problem(
        await client.post("/v1/approvals", json=bad_channel, headers=auth(owner)), 422, "validation_error"
    )
    start = {"title": "x", "assignees": {"roles": ["approver"]}}
    assert_problem(await client.post("/v1/approvals", json=start, headers=auth(viewer)), 403, "forbidden")
    resp = await client.post(path, json={"decision": "request_changes"}, headers=auth(owner))
    assert resp.json()["status"] == "changes_requested"


async def test_approver_not_assigned_is_refused_by_the_workflow(
    client: httpx.AsyncClient,
    api_worker: None,
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    owner = await make_key(tenant_id)
    approver = await make_key(tenant_id, role="approver")
    dana = await user_key(sessions, settings, tenant_id, "dana@example.com", "approver")
    item = await create(client, owner, assignees={"users": ["dana@example.com"]})
    path = f"/v1/approvals/{item['id']}/decision"
    body = assert_problem(
        await client.post(path, json={"decision": "approve"}, headers=auth(approver)), 403, "forbidden"
    )
    assert body["detail"] == "you are not an assignee of this approval"
    ok = await client.post(path, json={"decision": "approve"}, headers=auth(dana))
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "approved"


async def test_idempotency_key_returns_the_same_approval(
    client: httpx.AsyncClient, api_worker: None, make_key: MakeKey, tenant_id: str
) -> None:
    owner = await make_key(tenant_id)
    headers = {**auth(owner), "Idempotency-Key": "req-42"}
    payload = {"title": "Once", "assignees": {"roles": ["approver"]}}
    first, second = await asyncio.gather(
        client.post("/v1/approvals", json=payload, headers=headers),
        client.post("/v1/approvals", json=payload, headers=headers),
    )
    assert {first.status_code, second.status_code} == {202}
    assert first.json()["id"] == second.json()["id"]
    runs = await client.get("/v1/runs?kind=approval", headers=auth(owner))
    assert [r["id"] for r in runs.json()["data"]] == [first.json()["workflow_id"]]
    await client.post(
        f"/v1/approvals/{first.json()['id']}/decision", json={"decision": "approve"}, headers=auth(owner)
    )


async def test_console_session_cookies_csrf_and_login_redirect(
    client: httpx.AsyncClient, api_worker: None, make_key: MakeKey, tenant_id: str
) -> None:
    owner = await make_key(tenant_id)
    client.cookies.clear()
    redirect = await client.get("/console/approvals")
    assert redirect.status_code == 303
    assert redirect.headers["location"] == "/console/login"

    form = await client.get("/console/login")
    assert form.status_code == 200
    assert "script-src 'self'" in form.headers["content-security-policy"]
    csrf_cookie = form.headers["set-cookie"].lower()
    assert "httponly" in csrf_cookie
    assert "samesite=strict" in csrf_cookie
    assert "path=/console" in csrf_cookie
    token = client.cookies["nexus_console_csrf"]

    forged = await client.post("/console/login", data={"api_key": owner, "csrf_token": "forged"})
    assert forged.status_code == 403
    bad_key = await client.post("/console/login", data={"api_key": "nx_000000000000_x", "csrf_token": token})
    assert bad_key.status_code == 401
    login = await client.post("/console/login", data={"api_key": owner, "csrf_token": token})
    assert login.status_code == 303
    key_cookie = next(c for c in login.headers.get_list("set-cookie") if c.startswith("nexus_console_key="))
    assert "httponly" in key_cookie.lower()
    assert "samesite=strict" in key_cookie.lower()
    assert "secure" not in key_cookie.lower()  # plain http here; Secure is set on https
    session_token = client.cookies["nexus_console_csrf"]
    assert session_token != token  # rotated at login

    item = await create(client, owner, context_markdown="<b>bold?</b> **yes**")
    page = await client.get(f"/console/approvals/{item['id']}")
    assert page.status_code == 200
    assert "&lt;b&gt;bold?&lt;/b&gt; <strong>yes</strong>" in page.text
    path = f"/console/approvals/{item['id']}/decision"
    no_csrf = await client.post(path, data={"decision": "approve"}, headers={"HX-Request": "true"})
    assert_problem(no_csrf, 403, "forbidden")
    ok = await client.post(
        path,
        data={"decision": "reject", "comment": "no"},
        headers={"HX-Request": "true", "X-CSRF-Token": session_token},
    )
    assert ok.status_code == 200
    assert 'id="outcome"' in ok.text
    assert "Rejected by key:" in ok.text
    client.cookies.clear()


def test_markdown_subset_escapes_html() -> None:
    from api.console.markdown import render

    html = str(render("# T <i>\n\n- a *b*\n- `<c>`\n\n```\n<script>x</script>\n```\nplain & text"))
    assert "<h1>T &lt;i&gt;</h1>" in html
    assert "<li>a <em>b</em></li><li><code>&lt;c&gt;</code></li>" in html
    assert "<pre><code>&lt;script&gt;x&lt;/script&gt;</code></pre>" in html
    assert "<p>plain &amp; text</p>" in html
    assert "<script>" not in html
