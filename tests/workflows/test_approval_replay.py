"""Replay the recorded Approval history (approve path) on every run; a reordered variant must fail.

Re-record after an intentional, versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_approval_replay.py

The recording uses the plain pydantic converter (no encryption codec), so the committed JSON
does not depend on a session's codec key. The recorded run is created, notified to no channel,
approved through the ``decide`` update, and closes its row and runs row.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from core.approvals.client import send_decision
from core.approvals.contracts import ApprovalStatus, Assignees, approval_workflow_id
from core.config import Settings
from tests.workflows.approval_support import decision, request
from tests.workflows.approval_variants import AnnounceFirstApprovalWorkflow
from workers.main import build_worker
from workflows.approval import ApprovalWorkflow

HISTORY = Path(__file__).parent / "histories" / "approval_v1.json"
TENANT = "t-replay"
APPROVAL_ID = "approval-v1"
RUN_ID = approval_workflow_id(TENANT, APPROVAL_ID)


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json(RUN_ID, json.loads(HISTORY.read_text()))


async def test_recorded_history_replays() -> None:
    replayer = Replayer(workflows=[ApprovalWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history())


async def test_non_deterministic_change_fails_replay() -> None:
    replayer = Replayer(workflows=[AnnounceFirstApprovalWorkflow], data_converter=pydantic_data_converter)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history())


@pytest.mark.skipif(not os.environ.get("NEXUS_RECORD_HISTORIES"), reason="records histories on demand")
async def test_record_history(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
) -> None:
    from sqlalchemy.dialects.postgresql import insert

    from core.db.models import Tenant

    async with sessions() as session, session.begin():
        await session.execute(insert(Tenant).values(id=TENANT, name="replay").on_conflict_do_nothing())
    client = await Client.connect(
        settings.temporal.address,
        namespace=settings.temporal.namespace,
        data_converter=pydantic_data_converter,
    )
    queue = f"record-{uuid.uuid4().hex[:8]}"
    req = request(TENANT, approval_id=APPROVAL_ID, assignees=Assignees(roles=["approver"]), due_in_s=86_400)
    async with build_worker(client, settings, sessions, redis_client, queue):
        handle = await client.start_workflow(ApprovalWorkflow.run, req, id=RUN_ID, task_queue=queue)
        for _ in range(100):
            if (await handle.query(ApprovalWorkflow.state)).status is ApprovalStatus.pending:
                break
            await asyncio.sleep(0.05)
        await send_decision(client, TENANT, APPROVAL_ID, decision(TENANT, decision_id="replay-d1"))
        result = await handle.result()
    assert result.status is ApprovalStatus.approved
    history = await handle.fetch_history()
    HISTORY.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
