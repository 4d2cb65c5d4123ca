"""Repository of knowledge bases, documents and chunks. Every query filters on ``tenant_id``.

Search queries join the document and require ``status = 'ready'``, so chunks of a document that
is still being indexed (or failed) are never returned. Chunk writes are idempotent through
``UNIQUE(document_id, chunk_index)``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.rag_models import KbChunk, KbDocument, KnowledgeBase
from core.errors import NotFound
from core.rag.chunk import Chunk
from core.rag.contracts import DocumentStatus


def _uuid(value: str | uuid.UUID, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} not found") from None


@dataclass
class Hit:
    """A retrieved chunk with its document and the score of one retriever."""

    chunk_id: int
    document_id: str
    document_title: str
    chunk_index: int
    text: str
    start: int | None
    end: int | None
    metadata: dict[str, Any]
    score: float


INSERT_BATCH = 2_000
# Measured in bench/knowledge.py (see bench/RESULTS.md, "Knowledge bases"): with the index built
# at m=32, ef_construction=200 (core/db/rag_models.py, migration 0009), ef_search 100 gives
# recall@10 0.96 at 100k chunks. relaxed_order had the same recall as strict_order, filtered
# queries included, at a lower p95 with filters; the rows are re-sorted here.
HNSW_EF_SEARCH = 100
HNSW_ITERATIVE_SCAN = "relaxed_order"
ITERATIVE_SCANS = ("strict_order", "relaxed_order")


class RagRepository:
    """Tenant-scoped SQL of knowledge bases; the caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> RagRepository:
        return cls(session)

    # --- knowledge bases -------------------------------------------------------------------

    async def create_kb(self, tenant_id: str, **values: Any) -> KnowledgeBase:
        """Insert a knowledge base."""
        kb = KnowledgeBase(id=uuid.uuid4(), tenant_id=tenant_id, **values)
        self.session.add(kb)
        await self.session.flush()
        return kb

    async def get_kb(self, tenant_id: str, kb_id: str | uuid.UUID) -> KnowledgeBase:
        """A knowledge base of the tenant, else :class:`NotFound`."""
        kb = await self.session.scalar(
            select(KnowledgeBase).where(
                KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.id == _uuid(kb_id, "knowledge base")
            )
        )
        if kb is None:
            raise NotFound("knowledge base not found")
        return kb

    async def kb_by_name(self, tenant_id: str, name: str) -> KnowledgeBase | None:
        """The tenant's knowledge base called ``name``."""
        return await self.session.scalar(
            select(KnowledgeBase).where(KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.name == name)
        )

    async def list_kbs(
        self, tenant_id: str, limit: int, after: tuple[dt.datetime, str] | None
    ) -> list[KnowledgeBase]:
        """Newest first, keyset-paginated on ``(created_at, id)``."""
        stmt = select(KnowledgeBase).where(KnowledgeBase.tenant_id == tenant_id)
        if after is not None:
            stmt = stmt.where(
                func.row(KnowledgeBase.created_at, KnowledgeBase.id) < func.row(after[0], uuid.UUID(after[1]))
            )
        stmt = stmt.order_by(KnowledgeBase.created_at.desc(), KnowledgeBase.id.desc()).limit(limit)
        return list((await self.session.scalars(stmt)).all())

    async def update_kb(self, kb: KnowledgeBase, **values: Any) -> KnowledgeBase:
        """Change a loaded knowledge base's name or description."""
        for key, value in values.items():
            setattr(kb, key, value)
        kb.updated_at = dt.datetime.now(dt.UTC)
        await self.session.flush()
        return kb

    async def delete_kb(self, tenant_id: str, kb_id: uuid.UUID) -> tuple[int, int]:
        """Delete a knowledge base with its documents and chunks; returns (documents, chunks)."""
        counts = await self.session.execute(
            select(
                select(func.count())
                .select_from(KbDocument)
                .where(KbDocument.tenant_id == tenant_id, KbDocument.kb_id == kb_id)
                .scalar_subquery(),
                select(func.count())
                .select_from(KbChunk)
                .where(KbChunk.tenant_id == tenant_id, KbChunk.kb_id == kb_id)
                .scalar_subquery(),
            )
        )
        docs, chunks = counts.one()
        await self.session.execute(
            delete(KnowledgeBase).where(KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.id == kb_id)
        )
        return int(docs), int(chunks)

    # --- documents -------------------------------------------------------------------------

    async def insert_document(self, tenant_id: str, **values: Any) -> tuple[KbDocument, bool]:
        """Insert unless the same content (``sha256``) is in the knowledge base; (doc, created)."""
        new_id = values.pop("id", None) or uuid.uuid4()
        inserted = await self.session.scalar(
            insert(KbDocument)
            .values(id=new_id, tenant_id=tenant_id, **values)
            .on_conflict_do_nothing(index_elements=["tenant_id", "kb_id", "sha256"])
            .returning(KbDocument.id)
        )
        doc = await self.session.scalar(
            select(KbDocument)
            .where(
                KbDocument.tenant_id == tenant_id,
                KbDocument.kb_id == values["kb_id"],
                KbDocument.sha256 == values["sha256"],
            )
            .execution_options(populate_existing=True)
        )
        assert doc is not None
        return doc, inserted is not None

    async def get_document(
        self, tenant_id: str, kb_id: uuid.UUID, document_id: str | uuid.UUID
    ) -> KbDocument:
        """A document of the tenant's knowledge base, else :class:`NotFound`."""
        doc = await self.session.scalar(
            select(KbDocument)
            .where(
                KbDocument.tenant_id == tenant_id,
                KbDocument.kb_id == kb_id,
                KbDocument.id == _uuid(document_id, "document"),
            )
            .execution_options(populate_existing=True)
        )
        if doc is None:
            raise NotFound("document not found")
        return doc

    async def document_by_id(self, tenant_id: str, document_id: str) -> KbDocument:
        """A document of the tenant (any knowledge base), else :class:`NotFound`."""
        doc = await self.session.scalar(
            select(KbDocument).where(
                KbDocument.tenant_id == tenant_id, KbDocument.id == _uuid(document_id, "document")
            )
        )
        if doc is None:
            raise NotFound("document not found")
        return doc

    async def list_documents(
        self, tenant_id: str, kb_id: uuid.UUID, limit: int, after: tuple[dt.datetime, str] | None
    ) -> list[KbDocument]:
        """Newest first, keyset-paginated on ``(created_at, id)``."""
        stmt = select(KbDocument).where(KbDocument.tenant_id == tenant_id, KbDocument.kb_id == kb_id)
        if after is not None:
            stmt = stmt.where(
                func.row(KbDocument.created_at, KbDocument.id) < func.row(after[0], uuid.UUID(after[1]))
            )
        stmt = stmt.order_by(KbDocument.created_at.desc(), KbDocument.id.desc()).limit(limit)
        return list((await self.session.scalars(stmt)).all())

    async def set_status(
        self,
        tenant_id: str,
        document_id: str,
        status: str,
        *,
        chunk_count: int | None = None,
        error: str | None = None,
    ) -> None:
        """Set a document's status (and its chunk count or error)."""
        values: dict[str, Any] = {"status": status, "error": error, "updated_at": func.now()}
        if chunk_count is not None:
            values["chunk_count"] = chunk_count
        await self.session.execute(
            update(KbDocument)
            .where(KbDocument.tenant_id == tenant_id, KbDocument.id == _uuid(document_id, "document"))
            .values(**values)
        )

    async def delete_document(self, doc: KbDocument) -> int:
        """Delete a document and its chunks; returns how many chunks were removed."""
        removed = await self.delete_chunks(doc.tenant_id, str(doc.id))
        await self.session.execute(
            delete(KbDocument).where(KbDocument.tenant_id == doc.tenant_id, KbDocument.id == doc.id)
        )
        return removed

    # --- chunks ----------------------------------------------------------------------------

    async def insert_chunks(
        self, tenant_id: str, kb_id: uuid.UUID, document_id: str, chunks: list[Chunk]
    ) -> int:
        """Store chunks without vectors; existing ``(document_id, chunk_index)`` rows are kept."""
        if not chunks:
            return 0
        doc_id = _uuid(document_id, "document")
        rows = [
            {
                "tenant_id": tenant_id,
                "kb_id": kb_id,
                "document_id": doc_id,
                "chunk_index": c.index,
                "text": c.text,
                "start_offset": c.start,
                "end_offset": c.end,
                "token_count": c.token_count,
                "metadata": c.metadata,
            }
            for c in chunks
        ]
        # Batches keep each statement under the driver's 32,767 bind parameters (9 per row).
        inserted = 0
        for start in range(0, len(rows), INSERT_BATCH):
            result = await self.session.execute(
                insert(KbChunk)
                .values(rows[start : start + INSERT_BATCH])
                .on_conflict_do_nothing(index_elements=["document_id", "chunk_index"])
            )
            inserted += int(result.rowcount or 0)  # type: ignore[attr-defined]
        return inserted

    async def chunks_to_embed(
        self, tenant_id: str, document_id: str, first: int, last: int, model: str | None = None
    ) -> list[KbChunk]:
        """Chunks ``first`` ≤ index < ``last`` that have no vector yet (or, with ``model``, whose
        vector another model computed)."""
        missing: ColumnElement[bool] = KbChunk.embedding.is_(None)
        if model is not None:
            missing = or_(missing, KbChunk.embedding_model.is_distinct_from(model))
        stmt = (
            select(KbChunk)
            .where(
                KbChunk.tenant_id == tenant_id,
                KbChunk.document_id == _uuid(document_id, "document"),
                KbChunk.chunk_index >= first,
                KbChunk.chunk_index < last,
                missing,
            )
            .order_by(KbChunk.chunk_index)
        )
        return list((await self.session.scalars(stmt)).all())

    async def count_stale(self, tenant_id: str, document_id: str, models: set[str]) -> int:
        """Embedded chunks of a document whose vector none of ``models`` computed."""
        found = await self.session.scalar(
            select(func.count()).where(
                KbChunk.tenant_id == tenant_id,
                KbChunk.document_id == _uuid(document_id, "document"),
                KbChunk.embedding.is_not(None),
                or_(KbChunk.embedding_model.is_(None), KbChunk.embedding_model.not_in(sorted(models))),
            )
        )
        return int(found or 0)

    async def set_embeddings(self, tenant_id: str, model: str, vectors: dict[int, list[float]]) -> None:
        """Write the vector of each chunk id (a retry writes the same values again)."""
        for chunk_id, vector in vectors.items():
            await self.session.execute(
                update(KbChunk)
                .where(KbChunk.tenant_id == tenant_id, KbChunk.id == chunk_id)
                .values(embedding=vector, embedding_model=model)
            )

    async def chunks_to_reembed(
        self, tenant_id: str, kb_id: uuid.UUID, target_model: str, limit: int
    ) -> list[KbChunk]:
        """Up to ``limit`` embedded chunks of the knowledge base whose vector is not ``target_model``'s."""
        stmt = (
            select(KbChunk)
            .where(
                KbChunk.tenant_id == tenant_id,
                KbChunk.kb_id == kb_id,
                KbChunk.embedding.is_not(None),
                KbChunk.embedding_model.is_distinct_from(target_model),
            )
            .order_by(KbChunk.id)
            .limit(limit)
        )
        return list((await self.session.scalars(stmt)).all())

    async def count_not_on_model(self, tenant_id: str, kb_id: uuid.UUID, model: str) -> int:
        """Embedded chunks of the knowledge base whose vector is not ``model``'s."""
        found = await self.session.scalar(
            select(func.count()).where(
                KbChunk.tenant_id == tenant_id,
                KbChunk.kb_id == kb_id,
                KbChunk.embedding.is_not(None),
                KbChunk.embedding_model.is_distinct_from(model),
            )
        )
        return int(found or 0)

    async def lock_kb(self, tenant_id: str, kb_id: uuid.UUID) -> KnowledgeBase:
        """The knowledge base row, locked until the transaction ends."""
        kb = await self.session.scalar(
            select(KnowledgeBase)
            .where(KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.id == kb_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if kb is None:
            raise NotFound("knowledge base not found")
        return kb

    async def chunk_counts(self, tenant_id: str, document_id: str) -> tuple[int, int]:
        """(chunks, chunks with a vector) of a document."""
        row = (
            await self.session.execute(
                select(func.count(), func.count(KbChunk.embedding)).where(
                    KbChunk.tenant_id == tenant_id, KbChunk.document_id == _uuid(document_id, "document")
                )
            )
        ).one()
        return int(row[0]), int(row[1])

    async def delete_chunks(self, tenant_id: str, document_id: str) -> int:
        """Remove every chunk of a document; returns how many."""
        result = await self.session.execute(
            delete(KbChunk).where(
                KbChunk.tenant_id == tenant_id, KbChunk.document_id == _uuid(document_id, "document")
            )
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # --- retrieval -------------------------------------------------------------------------

    def _searchable(
        self, tenant_id: str, kb_id: uuid.UUID, filters: dict[str, Any] | None
    ) -> Select[KbChunk, str]:
        stmt: Select[KbChunk, str] = (
            select(KbChunk, KbDocument.title)
            .join(KbDocument, KbDocument.id == KbChunk.document_id)
            .where(
                KbChunk.tenant_id == tenant_id,
                KbChunk.kb_id == kb_id,
                KbDocument.tenant_id == tenant_id,
                KbDocument.status == DocumentStatus.ready,
            )
        )
        if filters:
            stmt = stmt.where(KbDocument.metadata_.contains(filters))
        return stmt

    @staticmethod
    def _hits(rows: Any, score_index: int = 2) -> list[Hit]:
        return [
            Hit(
                chunk_id=row[0].id,
                document_id=str(row[0].document_id),
                document_title=row[1],
                chunk_index=row[0].chunk_index,
                text=row[0].text,
                start=row[0].start_offset,
                end=row[0].end_offset,
                metadata=row[0].metadata_,
                score=float(row[score_index]),
            )
            for row in rows
        ]

    async def vector_search(
        self,
        tenant_id: str,
        kb_id: uuid.UUID,
        query: list[float],
        limit: int,
        filters: dict[str, Any] | None = None,
        model: str | None = None,
        ef_search: int = HNSW_EF_SEARCH,
        iterative_scan: str = HNSW_ITERATIVE_SCAN,
    ) -> list[Hit]:
        """Nearest chunks by cosine distance (HNSW, iterative scan so filters keep ``limit`` rows).

        With ``model``, only chunks whose vector that model computed are compared (a query vector
        of one model is meaningless against another model's vectors). Hits come best first
        (``relaxed_order`` scans may return rows slightly out of order: they are re-sorted)."""
        if iterative_scan not in ITERATIVE_SCANS:
            raise ValueError(f"unknown hnsw.iterative_scan {iterative_scan!r}")
        # SET takes no bind parameters: the mode is one of ITERATIVE_SCANS, ef_search an int.
        await self.session.execute(text(f"SET LOCAL hnsw.iterative_scan = {iterative_scan}"))
        await self.session.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef_search)}"))
        distance = KbChunk.embedding.cosine_distance(query)
        stmt = (
            self._searchable(tenant_id, kb_id, filters)
            .add_columns((1 - distance).label("score"))
            .where(KbChunk.embedding.is_not(None))
            .order_by(distance)
            .limit(limit)
        )
        if model is not None:
            stmt = stmt.where(KbChunk.embedding_model == model)
        hits = self._hits((await self.session.execute(stmt)).all())
        if iterative_scan != "strict_order":
            hits.sort(key=lambda h: (-h.score, h.chunk_id))
        return hits

    async def keyword_search(
        self,
        tenant_id: str,
        kb_id: uuid.UUID,
        tsquery: str,
        limit: int,
        filters: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Full-text matches ranked by ``ts_rank_cd`` (``tsquery`` is a sanitised ``to_tsquery`` text)."""
        if not tsquery:
            return []
        query = func.to_tsquery(text("'english'::regconfig"), tsquery)
        rank = func.ts_rank_cd(KbChunk.tsv, query, 1)
        stmt = (
            self._searchable(tenant_id, kb_id, filters)
            .add_columns(rank.label("score"))
            .where(KbChunk.tsv.bool_op("@@")(query))
            .order_by(rank.desc(), KbChunk.id)
            .limit(limit)
        )
        return self._hits((await self.session.execute(stmt)).all())

    async def embeddings_of(
        self, tenant_id: str, chunk_ids: list[int], model: str | None = None
    ) -> dict[int, list[float]]:
        """The vectors of the given chunks (for MMR and the local rerank), only ``model``'s if given."""
        if not chunk_ids:
            return {}
        stmt = select(KbChunk.id, KbChunk.embedding).where(
            KbChunk.tenant_id == tenant_id, KbChunk.id.in_(chunk_ids)
        )
        if model is not None:
            stmt = stmt.where(KbChunk.embedding_model == model)
        rows = await self.session.execute(stmt)
        return {int(r[0]): list(map(float, r[1])) for r in rows if r[1] is not None}
