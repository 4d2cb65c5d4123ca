"""NEXUS runs grounded on knowledge bases: ``/answer`` with ``mode: "nexus"`` and
``knowledge_base_ids`` on ``/v1/nexus/runs`` (the ``retrieval`` capability), with the real worker
and the simulator."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.models import Payload
from tests.api.test_knowledge_bases_api import (  # noqa: F401  (api_worker is a fixture)
    VPN,
    MakeKey,
    api_worker,
    make_kb,
    upload_text,
    wait_ready,
)
from tests.api.test_nexus_api import wait_closed
from tests.conftest import auth
from tests.workflows.orchestration_support import GEMINI, MINI

BADGE = "Your badge number is printed on the back of your badge."


async def _kb_with_docs(client: httpx.AsyncClient, key: str, name: str) -> tuple[str, dict[str, Any]]:
    kb = await make_kb(client, key, name=name)
    vpn = await upload_text(client, key, kb, "VPN guide", VPN)
    badge = await upload_text(client, key, kb, "Badge policy", BADGE)
    for doc in (vpn, badge):
        assert (await wait_ready(client, key, kb, doc["id"]))["status"] == "ready"
    return kb, vpn


async def _payload(sessions: async_sessionmaker[AsyncSession], tenant_id: str, key: str) -> str | None:
    async with sessions() as session:
        data = await session.scalar(
            select(Payload.data).where(Payload.tenant_id == tenant_id, Payload.idempotency_key == key)
        )
    return None if data is None else bytes(data).decode()


async def test_answer_in_nexus_mode_grounds_the_run_on_the_knowledge_base(
    client: httpx.AsyncClient,
    api_worker: None,  # noqa: F811
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb, vpn = await _kb_with_docs(client, key, "nexus-answer")
    resp = await client.post(
        f"/v1/knowledge-bases/{kb}/answer",
        json={
            "mode": "nexus",
            "query": "How do I connect to the VPN?",
            "nexus": {"models": [MINI, GEMINI], "strategy": "majority", "budget_usd": "0.50"},
        },
        headers={**auth(key), "Idempotency-Key": "kb-nexus-1"},
    )
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["id"]
    assert run_id.startswith(f"nexus:{tenant_id}:")
    again = await client.post(
        f"/v1/knowledge-bases/{kb}/answer",
        json={"mode": "nexus", "query": "How do I connect to the VPN?"},
        headers={**auth(key), "Idempotency-Key": "kb-nexus-1"},
    )
    assert again.status_code == 202
    assert again.json()["id"] == run_id
    assert again.headers.get("idempotent-replayed") == "true"

    done = await wait_closed(client, key, run_id)
    assert done["status"] == "completed", done
    # The one grounded subtask's prompt carried the passages, labelled by chunk id.
    prompt = await _payload(sessions, tenant_id, f"{run_id}:prompt:answer")
    assert prompt is not None
    assert "Knowledge-base passages" in prompt
    assert "install the client and sign in with your badge number" in prompt
    # Provenance: the citation of the subtask lists the chunks it was shown, best first.
    (citation,) = done["citations"]
    sources = citation["sources"]
    assert sources[0]["document_id"] == vpn["id"]
    assert sources[0]["knowledge_base_id"] == kb
    assert sources[0]["label"].startswith("[K:")
    assert f"{sources[0]['label']} (VPN guide)" in prompt


async def test_retrieval_subtasks_search_and_dependent_steps_do_not(
    client: httpx.AsyncClient,
    api_worker: None,  # noqa: F811
    make_key: MakeKey,
    tenant_id: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await make_key(tenant_id)
    kb, vpn = await _kb_with_docs(client, key, "nexus-plan")
    plan = {
        "subtasks": [
            {"id": "lookup", "instruction": "How do I connect to the VPN?", "capability": "retrieval"},
            {
                "id": "advice",
                "instruction": "Turn it into advice.",
                "depends_on": ["lookup"],
                "capability": "writing",
            },
        ]
    }
    resp = await client.post(
        "/v1/nexus/runs",
        json={
            "task": "Explain VPN access.",
            "plan": plan,
            "strategy": "majority",
            "models": [MINI, GEMINI],
            "synthesizer_model": MINI,
            "budget_usd": "0.50",
            "knowledge_base_ids": [kb],
        },
        headers=auth(key),
    )
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["id"]
    done = await wait_closed(client, key, run_id)
    assert done["status"] == "completed", done
    lookup = await _payload(sessions, tenant_id, f"{run_id}:prompt:lookup")
    advice = await _payload(sessions, tenant_id, f"{run_id}:prompt:advice")
    assert lookup is not None
    assert advice is not None
    assert "Knowledge-base passages" in lookup
    assert "Knowledge-base passages" not in advice
    by_subtask = {c["subtask_id"]: c["sources"] for c in done["citations"]}
    assert by_subtask["lookup"][0]["document_id"] == vpn["id"]
    assert by_subtask.get("advice", []) == []


async def test_knowledge_bases_of_another_tenant_are_404(
    client: httpx.AsyncClient,
    api_worker: None,  # noqa: F811
    make_key: MakeKey,
    tenant_id: str,
) -> None:
    owner = await make_key(tenant_id)
    other = await make_key(f"{tenant_id}-other")
    kb = await make_kb(client, owner, name="nexus-private")
    run = await client.post(
        "/v1/nexus/runs",
        json={"task": "What is the VPN?", "models": [MINI], "knowledge_base_ids": [kb]},
        headers=auth(other),
    )
    assert run.status_code == 404, run.text
    assert run.headers["content-type"].startswith("application/problem+json")
    garbage = await client.post(
        "/v1/nexus/runs",
        json={"task": "What is the VPN?", "models": [MINI], "knowledge_base_ids": ["not-a-uuid"]},
        headers=auth(owner),
    )
    assert garbage.status_code == 404
    answer = await client.post(
        f"/v1/knowledge-bases/{kb}/answer", json={"mode": "nexus", "query": "VPN?"}, headers=auth(other)
    )
    assert answer.status_code == 404
    for bad in ({"query": "VPN?"}, {"mode": "nexus", "model": MINI, "query": "VPN?"}):
        resp = await client.post(f"/v1/knowledge-bases/{kb}/answer", json=bad, headers=auth(owner))
        assert resp.status_code == 422, resp.text
