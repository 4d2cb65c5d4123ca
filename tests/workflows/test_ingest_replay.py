"""Replay the recorded IngestDocument history on every run; a variant without the PII hook must fail.

The recorded run indexes a short document with small chunks (40 tokens) and batches of two, so
the history holds parse, the PII hook, chunk, several ``rag_embed_batch`` iterations, finalize and
``finish_run``. Re-record after an intentional, versioned change with::

    NEXUS_RECORD_HISTORIES=1 .venv/bin/pytest -p no:cacheprovider tests/workflows/test_ingest_replay.py

The recording uses the plain pydantic converter (no encryption codec), so the committed JSON
does not depend on a session's codec key.
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
from core.rag.contracts import IngestInput
from tests.workflows.ingest_variants import NoPiiHookIngestWorkflow
from workers.main import build_worker
from workflows.ingest import IngestDocumentWorkflow

HISTORY = Path(__file__).parent / "histories" / "ingest_v1.json"
INGEST_V1_ID = "ingest:t-replay:v1"
TEXT = (
    "Expense claims are filed in the travel tool within thirty days. Receipts above twenty-five "
    "euros must be attached. Your manager approves the claim, then finance audits a sample. "
    "Mileage is paid at the statutory rate. Reimbursements arrive with the next payroll run. "
    "Claims older than ninety days are rejected unless finance grants an exception. Meals with "
    "customers list every attendee and the business purpose of the meeting."
)


def _history() -> WorkflowHistory:
    return WorkflowHistory.from_json(INGEST_V1_ID, json.loads(HISTORY.read_text()))


def test_recorded_history_covers_every_step() -> None:
    types = [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in json.loads(HISTORY.read_text())["events"]
        if "activityTaskScheduledEventAttributes" in e
    ]
    assert types[:4] == ["publish_run_event", "rag_parse", "publish_run_event", "rag_pii_hook"]
    assert types.count("rag_embed_batch") >= 2
    assert types[-2:] == ["rag_finalize", "finish_run"]


async def test_recorded_history_replays() -> None:
    replayer = Replayer(workflows=[IngestDocumentWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(_history())


async def test_non_deterministic_change_fails_replay() -> None:
    replayer = Replayer(workflows=[NoPiiHookIngestWorkflow], data_converter=pydantic_data_converter)
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
    from core.rag.contracts import RUN_KIND, DocumentStatus
    from core.rag.settings import LOCAL_MODEL
    from core.rag.store import RagRepository
    from core.rag.uploads import put_bytes
    from core.runs import RunRepository

    tenant = "t-replay"
    data = TEXT.encode()
    async with sessions() as session, session.begin():
        await session.execute(insert(Tenant).values(id=tenant, name="replay").on_conflict_do_nothing())
        repo = RagRepository.from_session(session)
        kb = await repo.create_kb(
            tenant,
            created_by="test",
            name=f"replay-{uuid.uuid4().hex[:8]}",
            description="",
            embedding_model=LOCAL_MODEL,
            chunk_tokens=40,
            chunk_overlap=5,
        )
        source = await put_bytes(session, tenant, data, "text/plain", idempotency_key=f"replay:{kb.id}")
        doc, _ = await repo.insert_document(
            tenant,
            id=uuid.uuid4(),
            kb_id=kb.id,
            title="expenses",
            content_type="text/plain",
            sha256=source.sha256,
            size=len(data),
            status=DocumentStatus.pending,
            source_payload_id=uuid.UUID(source.id),
            workflow_id=INGEST_V1_ID,
            chunk_count=0,
            metadata_={},
            created_by="test",
        )
        await RunRepository.from_session(session).create(
            tenant_id=tenant, workflow_id=INGEST_V1_ID, kind=RUN_KIND, created_by="test"
        )
    inp = IngestInput(
        tenant_id=tenant,
        kb_id=str(kb.id),
        document_id=str(doc.id),
        source=source,
        content_type="text/plain",
        embedding_model=LOCAL_MODEL,
        chunk_tokens=40,
        chunk_overlap=5,
        embed_batch=2,
        created_by="test",
    )
    client = await Client.connect(
        settings.temporal.address,
        namespace=settings.temporal.namespace,
        data_converter=pydantic_data_converter,
    )
    queue = f"record-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, settings, sessions, redis_client, queue):
        handle = await client.start_workflow(
            IngestDocumentWorkflow.run, inp, id=INGEST_V1_ID, task_queue=queue
        )
        result = await handle.result()
    assert result.status == DocumentStatus.ready, result
    assert result.chunk_count >= 3
    history = await handle.fetch_history()
    HISTORY.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
