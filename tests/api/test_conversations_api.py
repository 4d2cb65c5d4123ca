"""Chat with NEXUS: turns are orchestration runs that carry the conversation's memory."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from core.orchestration.memory import RECENT_TURNS, Turn, build_task
from tests.api.test_nexus_api import api_worker, wait_closed  # noqa: F401  (module fixture reused)
from tests.conftest import auth
from tests.workflows.orchestration_support import GEMINI, MINI

OPTIONS = {"strategy": "majority", "models": [MINI, GEMINI], "synthesizer_model": MINI, "budget_usd": "0.50"}


async def _turn_done(client: httpx.AsyncClient, key: str, conv: str, seq: int) -> dict[str, Any]:
    for _ in range(300):
        out = (await client.get(f"/v1/conversations/{conv}", headers=auth(key))).json()
        turns = out["turns"]
        if len(turns) >= seq and turns[seq - 1]["answer"] is not None:
            return out
        await asyncio.sleep(0.1)
    raise AssertionError(f"turn {seq} never answered: {out}")


async def test_turns_carry_memory_and_stream(client, api_worker, make_key, tenant_id, sessions) -> None:  # noqa: F811
    key = await make_key(tenant_id, "developer")
    created = await client.post("/v1/conversations", json={"title": "geo", **OPTIONS}, headers=auth(key))
    assert created.status_code == 201, created.text
    conv = created.json()["id"]
    first = await client.post(
        f"/v1/conversations/{conv}/messages",
        json={"content": "What is the capital of France?"},
        headers=auth(key),
    )
    assert first.status_code == 202, first.text
    out = await _turn_done(client, key, conv, 1)
    assert "Paris" in out["turns"][0]["answer"]

    # The second turn streams its run's events and its task carries the first turn.
    async with client.stream(
        "POST",
        f"/v1/conversations/{conv}/messages",
        json={"content": "Tell me more about that city.", "stream": True},
        headers=auth(key),
    ) as resp:
        assert resp.status_code == 200  # a stream of the run's events
        kinds = [
            line.split(":", 1)[1].strip() async for line in resp.aiter_lines() if line.startswith("event:")
        ]
    assert kinds[0] == "run.started"
    assert kinds[-1] == "run.completed"
    out = await _turn_done(client, key, conv, 2)
    assert out["turns"][1]["answer"]  # (the simulator answers the memory's rule, not a real follow-up)
    from sqlalchemy import select

    from core.db.models import Run

    async with sessions() as session:
        second = await session.scalar(select(Run).where(Run.workflow_id == out["turns"][1]["run_id"]))
    assert second is not None
    assert "User: What is the capital of France?" in second.input_summary["task_preview"]

    other = await make_key(f"x-{tenant_id}", "owner")
    assert (await client.get(f"/v1/conversations/{conv}", headers=auth(other))).status_code == 404
    posted = await client.post(
        f"/v1/conversations/{conv}/messages", json={"content": "hi"}, headers=auth(other)
    )
    assert posted.status_code == 404
    listed = (await client.get("/v1/conversations", headers=auth(other))).json()["data"]
    assert listed == []
    assert (await client.get(f"/v1/conversations/{uuid.uuid4()}", headers=auth(key))).status_code == 404


def test_memory_keeps_recent_turns_and_summarises_older_ones() -> None:
    history = [Turn(f"question {i}", f"answer {i} " + "x" * 500) for i in range(RECENT_TURNS + 3)]
    task = build_task(history, "the new question")
    assert task.endswith("the new question")
    assert "Earlier in this conversation (summarised):" in task
    assert "Q: question 0 → A: answer 0" in task
    assert f"User: question {RECENT_TURNS + 2}" in task
    assert "User: question 0" not in task  # older turns are summarised, not verbatim
    assert build_task([], "alone") == "alone"
