"""Replay the recorded Orchestration histories on every run; reordered variants must fail replay.

``orchestration_v1.json`` was recorded before the ``nexus-local-bookkeeping`` and
``nexus-inline-consensus`` patches (server-side bookkeeping activities, a ``run_consensus``
activity per subtask); ``orchestration_v2.json`` after them (local bookkeeping, short answers
voted in the workflow, independent events published concurrently); ``orchestration_v3.json`` on
the current path (``nexus-sequential-consensus``: adaptive picks whom to ask by the cost-aware
sequential scheme; ``nexus-batched-progress``: one ``open_layer`` local activity per layer,
events written in batches, the ``synthesize`` activity closes the run). All must replay: runs of any kind may be in flight during an upgrade.

Record a new history after an intentional, versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_orchestration_replay.py

The recording uses the plain pydantic converter (no encryption codec), so the committed JSON
does not depend on a session's codec key. The recorded run has two parallel subtasks with two
proposers each, majority consensus and a streamed synthesis (v1, v2); v3 is an adaptive run
over Claude, gpt-4o-mini and Gemini at target 0.9 (the sequential scheme asks Claude alone, then
the two cheap models at once; the Beta rule would ask Claude and gpt-4o-mini first).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from core.config import Settings
from core.orchestration.contracts import Strategy
from tests.workflows.orchestration_support import (
    CLAUDE,
    GEMINI,
    MINI,
    orchestration_input,
    store_task,
    two_facts_plan,
)
from tests.workflows.orchestration_variants import (
    BetaRuleOrchestrationWorkflow,
    CatalogFirstOrchestrationWorkflow,
    ConsensusActivityOrchestrationWorkflow,
    EagerProgressOrchestrationWorkflow,
)
from workers.main import build_worker
from workflows.orchestrate import OrchestrationWorkflow

HISTORIES = Path(__file__).parent / "histories"
RUN_IDS = {v: f"nexus:t-replay:orchestration-{v}" for v in ("v1", "v2", "v3")}
RECORD_VERSION = "v3"  # where a new recording goes
# What each recorded run was asked to do (besides the task and the two-facts plan).
RECORDED_RUNS: dict[str, dict[str, Any]] = {
    "v2": {"strategy": Strategy.majority, "models": [MINI, GEMINI]},
    "v3": {"strategy": Strategy.adaptive, "models": [CLAUDE, MINI, GEMINI], "confidence_target": 0.9},
}


def _path(version: str) -> Path:
    return HISTORIES / f"orchestration_{version}.json"


def _history(version: str) -> WorkflowHistory:
    return WorkflowHistory.from_json(RUN_IDS[version], json.loads(_path(version).read_text()))


def _markers(version: str) -> set[str]:
    """The patch ids recorded in a history (which code path the run took)."""
    ids = set()
    for event in json.loads(_path(version).read_text())["events"]:
        attrs = event.get("markerRecordedEventAttributes")
        if attrs and attrs.get("markerName") == "core_patch":
            for payload in attrs["details"].values():
                for item in payload["payloads"]:
                    decoded = json.loads(base64.b64decode(item["data"]))
                    ids.add(decoded["id"] if isinstance(decoded, dict) else decoded[0])
    return ids


def _local_activities(version: str) -> list[str]:
    """The activity types of the local activities recorded in a history, in order."""
    types = []
    for event in json.loads(_path(version).read_text())["events"]:
        attrs = event.get("markerRecordedEventAttributes")
        if attrs and attrs.get("markerName") == "core_local_activity":
            (payload,) = attrs["details"]["data"]["payloads"]
            types.append(json.loads(base64.b64decode(payload["data"]))["activity_type"])
    return types


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
async def test_recorded_history_replays(version: str) -> None:
    replayer = Replayer(workflows=[OrchestrationWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history(version))


def test_histories_cover_the_old_and_the_new_path() -> None:
    assert "nexus-inline-consensus" not in _markers("v1")
    assert {"nexus-local-bookkeeping", "nexus-inline-consensus"} <= _markers("v2")
    v1, v2 = _path("v1").read_text(), _path("v2").read_text()
    assert "run_consensus" in v1
    assert "run_consensus" not in v2  # short answers were voted in the workflow
    assert {"nexus-sequential-consensus", "nexus-batched-progress"} <= _markers("v3")
    assert not {"nexus-sequential-consensus", "nexus-batched-progress"} & (_markers("v1") | _markers("v2"))
    # One local activity for the one layer; events in batches, the synthesis closes the run.
    assert _local_activities("v3") == ["open_layer"]
    assert "finish_run" in _local_activities("v2")
    assert "publish_run_event" in _local_activities("v2")


@pytest.mark.parametrize(
    ("version", "variant"),
    [
        ("v1", CatalogFirstOrchestrationWorkflow),
        ("v2", ConsensusActivityOrchestrationWorkflow),
        ("v3", BetaRuleOrchestrationWorkflow),
        ("v3", EagerProgressOrchestrationWorkflow),
    ],
)
async def test_non_deterministic_change_fails_replay(version: str, variant: type) -> None:
    replayer = Replayer(workflows=[variant], data_converter=pydantic_data_converter)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history(version))


@pytest.mark.skipif(not os.environ.get("NEXUS_RECORD_HISTORIES"), reason="records histories on demand")
async def test_record_history(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
) -> None:
    from sqlalchemy.dialects.postgresql import insert

    from core.db.models import Tenant

    async with sessions() as session, session.begin():
        await session.execute(insert(Tenant).values(id="t-replay", name="replay").on_conflict_do_nothing())
    task = await store_task(sessions, "t-replay", "Answer two questions.")
    client = await Client.connect(
        settings.temporal.address,
        namespace=settings.temporal.namespace,
        data_converter=pydantic_data_converter,
    )
    queue = f"record-{uuid.uuid4().hex[:8]}"
    inp = orchestration_input(
        "t-replay", task, plan=two_facts_plan(), synthesizer_model=MINI, **RECORDED_RUNS[RECORD_VERSION]
    )
    async with build_worker(client, settings, sessions, redis_client, queue):
        handle = await client.start_workflow(
            OrchestrationWorkflow.run, inp, id=RUN_IDS[RECORD_VERSION], task_queue=queue
        )
        await handle.result()
    history = await handle.fetch_history()
    _path(RECORD_VERSION).write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
