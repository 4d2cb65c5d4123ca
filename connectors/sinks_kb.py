"""The knowledge-base sink of connector jobs: one knowledge-base document per record (or file).

See ``connectors.sinks`` for how a page's documents are prepared, stored and ingested.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.base import SyncRecord
from connectors.sinks import TemplateError, render
from connectors.sinks_records import SinkContext
from core.connector_contracts import KnowledgeBaseSinkOptions
from core.db.connector_models import ConnectorDocument, ConnectorJob
from core.db.rag_models import KbDocument
from core.errors import NotFound, ValidationFailed
from core.rag.contracts import RUN_KIND as INGEST_KIND
from core.rag.contracts import DocumentStatus
from core.rag.parse import UnsupportedDocument, check_upload, resolve_content_type
from core.rag.store import RagRepository
from core.rag.uploads import put_bytes
from core.runs import workflow_id

SINK_ACTOR_PREFIX = "connector:"
# Why the knowledge-base sink leaves a record out (counted per page, by kind).
SKIP_TEMPLATE = "template_error"  # a template refers to a missing field or fails
SKIP_UNSUPPORTED = "unsupported_document"  # unsupported file type, empty, too large, not UTF-8
SKIP_NOT_A_FILE = "not_a_file"  # drive folders and other items without content
SKIP_NO_DOWNLOAD = "download_unavailable"  # files on a path that cannot download them
SKIP_KINDS = (SKIP_TEMPLATE, SKIP_UNSUPPORTED, SKIP_NOT_A_FILE, SKIP_NO_DOWNLOAD)


def record_text(obj: str, record: SyncRecord) -> str:
    """A record as a small text document (the knowledge-base sink ingests this)."""
    lines = [f"# {obj} {record.external_id}", ""]
    for key in sorted(record.data):
        value = record.data[key]
        if value in (None, "", [], {}):
            continue
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        lines.append(f"- {key}: {shown}")
    return "\n".join(lines) + "\n"


def record_digest(text: str) -> str:
    """Stable content hash of a record document."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class DocumentDraft:
    """One record's document, ready to store (or a deletion, or a skip with its reason)."""

    external_id: str
    modified_at: Any
    title: str = ""
    content_type: str = "text/markdown"
    data: bytes = b""
    metadata: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False
    skipped: str | None = None  # the reason (client-safe: names no values)
    skip_kind: str | None = None  # one of SKIP_KINDS: what the page counts and reports

    def skip(self, kind: str, reason: str) -> None:
        """Leave this record out of the knowledge base, counted under ``kind``."""
        self.skip_kind, self.skipped = kind, reason

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


FileFetch = Callable[[SyncRecord], Awaitable[tuple[bytes, str]]]


def file_download(connector_type: str, obj: str, record: SyncRecord) -> dict[str, Any] | None:
    """The download action input for a record that is a file, else None (records are text)."""
    if connector_type == "m365" and obj == "drive_items" and "file" in record.data:
        drive = (record.data.get("parentReference") or {}).get("driveId")
        return {"drive_id": str(drive or ""), "item_id": record.external_id}
    return None


def is_deleted(connector_type: str, record: SyncRecord) -> bool:
    """Whether the source reports the record as deleted (Graph delta's ``deleted`` facet)."""
    return connector_type == "m365" and "deleted" in record.data


def is_folder(connector_type: str, record: SyncRecord) -> bool:
    """Drive folders (and other non-file items) have no content to ingest."""
    return connector_type == "m365" and "file" not in record.data


class KnowledgeBaseSink:
    """One knowledge-base document per record, ingested by ``IngestDocument``."""

    def __init__(self, max_upload_bytes: int) -> None:
        self.max_upload_bytes = max_upload_bytes

    async def prepare(
        self,
        job: ConnectorJob,
        connector_type: str,
        records: list[SyncRecord],
        fetch: FileFetch | None,
    ) -> list[DocumentDraft]:
        """Render (or download) each record's document; the latest version of an id wins."""
        options = KnowledgeBaseSinkOptions.model_validate(job.sink_options or {})
        latest: dict[str, SyncRecord] = {}
        for record in records:
            seen = latest.get(record.external_id)
            if seen is None or record.modified_at >= seen.modified_at:
                latest[record.external_id] = record
        drafts = []
        for record in latest.values():
            draft = DocumentDraft(external_id=record.external_id, modified_at=record.modified_at)
            if is_deleted(connector_type, record):
                draft.deleted = True
            elif is_folder(connector_type, record):
                draft.skip(SKIP_NOT_A_FILE, "not a file")
            else:
                await self._fill(draft, job, connector_type, record, options, fetch)
            drafts.append(draft)
        return drafts

    async def _fill(
        self,
        draft: DocumentDraft,
        job: ConnectorJob,
        connector_type: str,
        record: SyncRecord,
        options: KnowledgeBaseSinkOptions,
        fetch: FileFetch | None,
    ) -> None:
        obj = job.object
        metadata: dict[str, Any] = {
            "source": {"connection": job.connection_id, "object": obj, "external_id": record.external_id}
        }
        try:
            for key, source in options.metadata.items():
                metadata[key] = render(source, record, obj)
            download = file_download(connector_type, obj, record)
            if download is not None and options.text is None:
                if fetch is None:
                    draft.skip(SKIP_NO_DOWNLOAD, "files cannot be downloaded on this path")
                    return
                name = str(record.data.get("name") or record.external_id)
                data, declared = await fetch(record)
                draft.content_type = resolve_content_type(declared, name)
                draft.title = render(options.title, record, obj) if options.title else name
                draft.data = data
            else:
                text = render(options.text, record, obj) if options.text else record_text(obj, record)
                draft.data = text.encode("utf-8")
                draft.title = (
                    render(options.title, record, obj) if options.title else f"{obj} {record.external_id}"
                )
            check_upload(draft.data, draft.content_type, self.max_upload_bytes)
        except UnsupportedDocument as exc:
            draft.skip(SKIP_UNSUPPORTED, exc.detail)
            return
        except TemplateError as exc:
            draft.skip(SKIP_TEMPLATE, str(exc))
            return
        draft.title = " ".join(draft.title.split())[:300] or record.external_id[:300]
        draft.metadata = metadata

    async def write(
        self,
        session: AsyncSession,
        job: ConnectorJob,
        records: list[SyncRecord],
        ctx: SinkContext | None = None,
    ) -> int:
        """Store the prepared documents and move their links (inside the page's transaction)."""
        if ctx is None or ctx.drafts is None:
            raise ValueError("the knowledge-base sink needs prepared documents")
        repo = RagRepository.from_session(session)
        try:
            kb = await repo.get_kb(job.tenant_id, job.sink_target)
        except (NotFound, ValidationFailed):
            raise NotFound("the job's knowledge base does not exist") from None
        written = 0
        for draft in ctx.drafts:
            if draft.skipped is not None:
                continue
            link = await session.scalar(
                select(ConnectorDocument)
                .where(
                    ConnectorDocument.tenant_id == job.tenant_id,
                    ConnectorDocument.kb_id == kb.id,
                    ConnectorDocument.connection_id == job.connection_id,
                    ConnectorDocument.object == job.object,
                    ConnectorDocument.external_id == draft.external_id,
                )
                .with_for_update()
            )
            if draft.deleted:
                if link is not None:
                    old = link.document_id
                    await session.delete(link)
                    await session.flush()
                    await self._erase_if_orphaned(session, job.tenant_id, old)
                    written += 1
                continue
            digest = draft.sha256
            if link is not None and link.sha256 == digest:
                continue  # same content: nothing to ingest again
            doc = await self._document(session, job, kb.id, draft, digest)
            if link is None:
                session.add(
                    ConnectorDocument(
                        tenant_id=job.tenant_id,
                        kb_id=kb.id,
                        connection_id=job.connection_id,
                        object=job.object,
                        external_id=draft.external_id,
                        job_id=job.id,
                        document_id=doc.id,
                        sha256=digest,
                        version=1,
                        modified_at=draft.modified_at,
                        sync_workflow_id=ctx.workflow_id,
                        page=ctx.page,
                    )
                )
                await session.flush()
            else:
                old = link.document_id
                link.document_id, link.sha256, link.version = doc.id, digest, link.version + 1
                link.modified_at, link.job_id = draft.modified_at, job.id
                link.sync_workflow_id, link.page = ctx.workflow_id, ctx.page
                link.updated_at = dt.datetime.now(dt.UTC)
                await session.flush()
                if old != doc.id:
                    await self._erase_if_orphaned(session, job.tenant_id, old)
            written += 1
        return written

    async def _document(
        self, session: AsyncSession, job: ConnectorJob, kb_id: uuid.UUID, draft: DocumentDraft, digest: str
    ) -> KbDocument:
        """The document holding ``draft``'s content (an existing one with that content, else new)."""
        source = await put_bytes(
            session, job.tenant_id, draft.data, draft.content_type, idempotency_key=f"kb:{kb_id}:{digest}"
        )
        doc_id = uuid.uuid4()  # the page transaction is atomic: a retry never sees this id
        doc, _ = await RagRepository.from_session(session).insert_document(
            job.tenant_id,
            id=doc_id,
            kb_id=kb_id,
            title=draft.title,
            content_type=draft.content_type,
            sha256=digest,
            size=len(draft.data),
            status=DocumentStatus.pending,
            source_payload_id=uuid.UUID(source.id),
            workflow_id=workflow_id(INGEST_KIND, job.tenant_id, doc_id.hex),
            chunk_count=0,
            metadata_=json.loads(json.dumps(draft.metadata, default=str)),
            created_by=f"{SINK_ACTOR_PREFIX}{job.id}",
        )
        return doc

    @staticmethod
    async def _erase_if_orphaned(session: AsyncSession, tenant_id: str, document_id: uuid.UUID) -> None:
        """Erase a document this sink created once no record links to it any more."""
        others = await session.scalar(
            select(func.count())
            .select_from(ConnectorDocument)
            .where(ConnectorDocument.tenant_id == tenant_id, ConnectorDocument.document_id == document_id)
        )
        if others:
            return
        doc = await session.scalar(
            select(KbDocument).where(KbDocument.tenant_id == tenant_id, KbDocument.id == document_id)
        )
        if doc is not None and doc.created_by.startswith(SINK_ACTOR_PREFIX):
            await RagRepository.from_session(session).delete_document(doc)


async def page_documents_to_ingest(
    session: AsyncSession,
    tenant_id: str,
    job_id: str,
    sync_workflow_id: str,
    first_page: int,
    last_page: int | None,
) -> list[KbDocument]:
    """The still-pending documents linked by the run's committed pages ``first_page`` through
    ``last_page`` (``None``: every later page too), whose ingestion is to ensure."""
    query = (
        select(KbDocument)
        .join(
            ConnectorDocument,
            (ConnectorDocument.tenant_id == KbDocument.tenant_id)
            & (ConnectorDocument.document_id == KbDocument.id),
        )
        .where(
            ConnectorDocument.tenant_id == tenant_id,
            KbDocument.tenant_id == tenant_id,
            ConnectorDocument.job_id == job_id,
            ConnectorDocument.sync_workflow_id == sync_workflow_id,
            ConnectorDocument.page >= first_page,
            KbDocument.status == DocumentStatus.pending,
        )
    )
    if last_page is not None:
        query = query.where(ConnectorDocument.page <= last_page)
    return list(await session.scalars(query.distinct()))
