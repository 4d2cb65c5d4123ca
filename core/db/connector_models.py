"""Connector tables: connections, sync jobs, their checkpoints and the synced-records sink.

- ``connections``: a tenant's configured connector; ``config`` is plain JSON, the credentials
  only as AES-256-GCM ciphertext (key id + nonce stored beside it, the tenant and connection
  ids bound as associated data so a ciphertext cannot be moved to another row).
- ``connector_jobs``: what to sync (connection, object) into which sink, how, and when.
- ``connector_checkpoints``: one row per job — the source checkpoint, pages done and records
  written. It is updated in the same transaction as the sink write of that page (compare-and-set
  on ``pages_done``), so a crash between pages can neither skip nor double-count one.
- ``connector_records``: the "table of records" sink. ``UNIQUE (tenant_id, connection_id,
  object, external_id)`` is what makes a re-read page land on the same rows (each record once).
  The dataset sink writes here too and snapshots the rows into a dataset version per run.
- ``connector_documents`` (migration 0013): the knowledge-base sink's link from a source record
  ``(knowledge base, connection, object, external id)`` to the knowledge-base document holding
  its current content; an updated record moves the link to a new document (``version`` + 1).
- ``connector_record_jobs`` (migration 0014): which jobs wrote which ``connector_records`` row.
  Several jobs may sync the same (connection, object) and share its rows; the dataset sink
  snapshots only the rows its own job wrote. The checkpoint's ``records_skipped`` / ``skipped``
  (also 0014) count the records a sink left out, by kind.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, Timestamp


class Connection(Base):
    """A configured connector of one tenant (credentials encrypted at rest, never returned)."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    credentials_key_id: Mapped[str] = mapped_column(String(64))
    credentials_nonce: Mapped[bytes] = mapped_column(LargeBinary)
    credentials_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class ConnectorJob(Base):
    """A sync job: read ``object`` from a connection page by page into a sink."""

    __tablename__ = "connector_jobs"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "connection_id"], ["connections.tenant_id", "connections.id"]),
        Index("ix_connector_jobs_tenant_created", "tenant_id", "created_at"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    connection_id: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(100))
    sink_type: Mapped[str] = mapped_column(String(32))
    sink_target: Mapped[str] = mapped_column(String(200), default="")
    # knowledge-base templates / dataset field map (migration 0013)
    sink_options: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    page_size: Mapped[int] = mapped_column(Integer)
    max_pages_per_minute: Mapped[int | None] = mapped_column(Integer)
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(32), default="idle")
    last_workflow_id: Mapped[str | None] = mapped_column(String(300))
    last_error: Mapped[str | None] = mapped_column(String(500))
    runs_started: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class ConnectorCheckpoint(Base):
    """Where a job's sync stands; advanced only together with the sink write of a page."""

    __tablename__ = "connector_checkpoints"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "job_id"], ["connector_jobs.tenant_id", "connector_jobs.id"]),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    pages_done: Mapped[int] = mapped_column(BigInteger, default=0)
    records_written: Mapped[int] = mapped_column(BigInteger, default=0)
    has_more: Mapped[bool] = mapped_column(default=True)
    last_page_records: Mapped[int] = mapped_column(Integer, default=0)
    # records a sink left out (knowledge base: template errors, unsupported files, folders)
    records_skipped: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    skipped: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict, server_default="{}")
    owner_workflow_id: Mapped[str | None] = mapped_column(String(300))
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class ConnectorRecord(Base):
    """One synced record (the "table of records" sink); the latest ``modified_at`` wins."""

    __tablename__ = "connector_records"
    __table_args__ = (
        UniqueConstraint("tenant_id", "connection_id", "object", "external_id"),
        Index("ix_connector_records_job", "tenant_id", "job_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    connection_id: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str] = mapped_column(String(300))
    job_id: Mapped[str] = mapped_column(String(64))
    modified_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    writes: Mapped[int] = mapped_column(Integer, default=1)
    synced_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class ConnectorRecordJob(Base):
    """A job wrote this ``connector_records`` row (a row shared by jobs has one entry per job)."""

    __tablename__ = "connector_record_jobs"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "job_id", "connection_id", "object", "external_id"),)

    tenant_id: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(64))
    connection_id: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str] = mapped_column(String(300))


class ConnectorDocument(Base):
    """The knowledge-base sink: which document holds a source record's current content."""

    __tablename__ = "connector_documents"
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "kb_id", "connection_id", "object", "external_id"),
        Index("ix_connector_documents_page", "tenant_id", "job_id", "sync_workflow_id", "page"),
        Index("ix_connector_documents_document", "tenant_id", "document_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64))
    kb_id: Mapped[uuid.UUID] = mapped_column(UUID)
    connection_id: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str] = mapped_column(String(300))
    job_id: Mapped[str] = mapped_column(String(64))
    document_id: Mapped[uuid.UUID] = mapped_column(UUID)
    sha256: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    modified_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    sync_workflow_id: Mapped[str] = mapped_column(String(300))
    page: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
