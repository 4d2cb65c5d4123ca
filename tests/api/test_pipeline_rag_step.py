"""A pipeline ``rag`` step searches one of the tenant's knowledge bases."""

from __future__ import annotations

import httpx

from tests.api.test_knowledge_bases_api import api_worker, make_kb, upload_text, wait_ready  # noqa: F401
from tests.api.test_pipelines_api import wait_closed
from tests.conftest import auth


async def test_rag_step_returns_the_relevant_chunk(
    client: httpx.AsyncClient,
    api_worker,  # noqa: F811  (the module-scoped worker fixture imported above)
    make_key,
    tenant_id,
) -> None:
    key = await make_key(tenant_id, "developer")
    kb = await make_kb(client, key, "policies")
    doc = await upload_text(
        client, key, kb, "Travel", "Employees may book economy class for flights shorter than six hours."
    )
    assert (await wait_ready(client, key, kb, doc["id"]))["status"] == "ready"
    definition = {
        "id": "ask-policy",
        "name": "Ask the policy KB",
        "inputs": {"question": {"type": "string"}},
        "steps": [
            {"id": "lookup", "type": "rag", "knowledge_base": "policies", "query": "{{ inputs.question }}"}
        ],
        "outputs": {"top": "{{ steps.lookup.output.results[0].document_title }}"},
    }
    assert (await client.post("/v1/pipelines", json=definition, headers=auth(key))).status_code == 201
    started = await client.post(
        "/v1/pipelines/ask-policy/runs",
        json={"inputs": {"question": "which class for flights"}},
        headers=auth(key),
    )
    assert started.status_code == 202, started.text
    run = await wait_closed(client, key, started.json()["id"])
    assert run["status"] == "completed", run
    assert run["result"]["outputs"] == {"top": "Travel"}
