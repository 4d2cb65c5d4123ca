"""Replay the recorded ReembedKnowledgeBase history on every run; a reordered variant must fail.

The recorded run moves five chunks (stored with the local model) to the simulator's
``sim-openai/text-embedding-3-small`` in batches of two, so the history holds three
``rag_reembed_batch`` calls that wrote vectors, the empty one that ends the loop, the switch and
``finish_run``. Re-record after an intentional, versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_reembed_replay.py
"""

from __future__ import annotations

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

from core.config import Settings
from core.rag.contracts import ReembedInput
from tests.workflows.reembed_variants import SwitchFirstReembedWorkflow
from workers.main import build_worker
from workflows.reembed import ReembedKnowledgeBaseWorkflow

HISTORY = Path(__file__).parent / "histories" / "reembed_v1.json"
REEMBED_V1_ID = "reembed:t-replay:v1"
TARGET = "sim-openai/text-embedding-3-small"


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json(REEMBED_V1_ID, json.loads(HISTORY.read_text()))


def test_recorded_history_covers_every_step() -> None:
    types = [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in json.loads(HISTORY.read_text())["events"]
        if "activityTaskScheduledEventAttributes" in e
    ]
    assert types[:2] == ["publish_run_event", "rag_reembed_batch"]
    assert types.count("rag_reembed_batch") == 4
    assert types[-2:] == ["rag_reembed_switch", "finish_run"]


async def test_recorded_history_replays() -> None:
    replayer = Replayer(workflows=[ReembedKnowledgeBaseWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history())


async def test_non_deterministic_change_fails_replay() -> None:
    replayer = Replayer(workflows=[SwitchFirstReembedWorkflow], data_converter=pydantic_data_converter)
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
    from core.rag.chunk import Chunk
    from core.rag.contracts import REEMBED_RUN_KIND, DocumentStatus
    from core.rag.settings import LOCAL_MODEL
    from core.rag.store import RagRepository
    from core.runs import RunRepository

    tenant = "t-replay"
    async with sessions() as session, session.begin():
        await session.execute(insert(Tenant).values(id=tenant, name="replay").on_conflict_do_nothing())
        repo = RagRepository.from_session(session)
        kb = await repo.create_kb(
            tenant,
            created_by="test",
            name=f"replay-{uuid.uuid4().hex[:8]}",
            description="",
            embedding_model=LOCAL_MODEL,
            pending_embedding_model=TARGET,
            chunk_tokens=40,
            chunk_overlap=5,
        )
        doc, _ = await repo.insert_document(
            tenant,
            id=uuid.uuid4(),
            kb_id=kb.id,
            title="five chunks",
            content_type="text/plain",
            sha256=uuid.uuid4().hex,
            size=5,
            status=DocumentStatus.ready,
            source_payload_id=uuid.uuid4(),
            workflow_id="ingest:t-replay:none",
            chunk_count=5,
            metadata_={},
            created_by="test",
        )
        chunks = [Chunk(index=i, text=f"chunk number {i}", start=0, end=1, token_count=3) for i in range(5)]
        await repo.insert_chunks(tenant, kb.id, str(doc.id), chunks)
        stored = await repo.chunks_to_embed(tenant, str(doc.id), 0, 5)
        await repo.set_embeddings(tenant, LOCAL_MODEL, {c.id: [1.0] + [0.0] * 383 for c in stored})
        await RunRepository.from_session(session).create(
            tenant_id=tenant, workflow_id=REEMBED_V1_ID, kind=REEMBED_RUN_KIND, created_by="test"
        )
    inp = ReembedInput(tenant_id=tenant, kb_id=str(kb.id), target_model=TARGET, batch=2, created_by="test")
    client = await Client.connect(
        settings.temporal.address,
        namespace=settings.temporal.namespace,
        data_converter=pydantic_data_converter,
    )
    queue = f"record-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, settings, sessions, redis_client, queue):
        handle = await client.start_workflow(
            ReembedKnowledgeBaseWorkflow.run, inp, id=REEMBED_V1_ID, task_queue=queue
        )
        result = await handle.result()
    assert result.reembedded == 5, result
    assert result.embedding_model == TARGET
    history = await handle.fetch_history()
    HISTORY.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
