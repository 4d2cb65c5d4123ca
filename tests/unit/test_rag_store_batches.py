"""Chunk inserts stay under the driver's bind-parameter limit for very long documents."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from core.db.rag_models import KbChunk
from core.rag.chunk import Chunk
from core.rag.store import INSERT_BATCH, RagRepository


async def test_many_chunks_insert_in_batches_and_idempotently(sessions, make_key, tenant_id) -> None:
    await make_key(tenant_id)  # creates the tenant
    count = INSERT_BATCH * 2 + 17  # 9 bind parameters per row: one statement would exceed 32,767
    chunks = [Chunk(index=i, text=f"chunk {i}", start=i, end=i + 1, token_count=2) for i in range(count)]
    async with sessions() as session, session.begin():
        repo = RagRepository.from_session(session)
        kb = await repo.create_kb(
            tenant_id,
            name="big",
            embedding_model="local/all-minilm-l6-v2",
            chunk_tokens=200,
            chunk_overlap=20,
            created_by="test",
        )
        doc, _ = await repo.insert_document(
            tenant_id,
            kb_id=kb.id,
            title="long",
            content_type="text/plain",
            sha256=uuid.uuid4().hex * 2,
            size=count,
            source_payload_id=uuid.uuid4(),
            workflow_id="test",
            created_by="test",
        )
        assert await repo.insert_chunks(tenant_id, kb.id, str(doc.id), chunks) == count
        assert await repo.insert_chunks(tenant_id, kb.id, str(doc.id), chunks) == 0  # a retry adds nothing
        stored = await session.scalar(
            select(func.count()).select_from(KbChunk).where(KbChunk.document_id == doc.id)
        )
    assert stored == count
