"""Contracts of the ``ConnectorSync`` workflow and the connector activities (pure pydantic, no I/O).

Workflow inputs carry only ids and counters — never credentials or records: activities load
and decrypt a connection's credentials themselves and keep records in the database. Add
fields with defaults only, so running histories stay decodable.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.pipelines.contracts import EventSeqs, StepContext

WORKFLOW_NAME = "ConnectorSync"
RUN_KIND = "connector_sync"


class SinkType(StrEnum):
    """Where synced records go."""

    records = "records"  # the connector_records table
    knowledge_base = "knowledge_base"  # one KB document per record (the ingestion workflow)
    dataset = "dataset"  # connector_records, then one eval dataset version per completed run


class KnowledgeBaseSinkOptions(BaseModel):
    """How a record becomes a knowledge-base document (sandboxed Jinja2 templates).

    Templates see ``record`` (the record's fields), ``external_id``, ``object`` and
    ``modified_at``. Without ``text`` a record becomes a small "field: value" document; files
    (Microsoft 365 ``drive_items``) are downloaded and ingested as they are.
    """

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, max_length=2000, description="Document title template.")
    text: str | None = Field(None, max_length=20000, description="Document text template.")
    metadata: dict[str, str] = Field(
        default_factory=dict, max_length=32, description="Metadata key -> value template."
    )


class DatasetSinkOptions(BaseModel):
    """How a record becomes an eval case (sandboxed Jinja2 templates, as for the KB sink)."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, max_length=20000, description="Case input template.")
    expected: str | None = Field(None, max_length=20000, description="Expected output template.")
    contexts: list[str] = Field(default_factory=list, max_length=32, description="Context templates.")
    tags: list[str] = Field(default_factory=list, max_length=32, description="Tag templates.")
    id: str = Field("{{ external_id }}", max_length=2000, description="Case id template.")


class SyncEvent(StrEnum):
    """Progress events of a sync run (the SSE ``event:`` field)."""

    started = "run.started"
    page = "connector.page"
    throttled = "connector.paced"
    completed = "run.completed"
    failed = "run.failed"
    cancelled = "run.cancelled"


class SyncInput(BaseModel):
    """The single argument of ``ConnectorSync`` (ids and counters only)."""

    tenant_id: str
    job_id: str
    page_size: int = Field(200, gt=0)
    pages_per_run: int = Field(100, gt=0, description="Pages before the run continues as new.")
    max_pages_per_minute: int | None = Field(None, gt=0, description="API limit pacing (None = no pacing).")
    page_timeout_s: float = Field(120.0, gt=0, description="Start-to-close timeout of one page.")
    created_by: str = ""
    # carried across continue-as-new
    continued: bool = False
    blocking: bool = False
    pages_done: int = 0
    sink: str = Field("", description="The job's sink type (set by begin; empty in older runs).")
    pages: int = Field(0, description="Pages read by this run chain so far.")
    records: int = Field(0, description="Records written by this run chain so far.")
    next_seq: int = 1


class SyncResult(BaseModel):
    """How a sync run chain ended."""

    status: str
    job_id: str
    pages: int
    records: int
    pages_done: int
    error: str | None = None
    dataset_version: int | None = None


class BeginInput(BaseModel):
    tenant_id: str
    job_id: str
    workflow_id: str
    seq: int
    created_by: str = ""


class BeginResult(BaseModel):
    pages_done: int
    blocking: bool
    sink: str = ""


class SnapshotInput(BaseModel):
    """``connector_sync_snapshot``: the dataset sink's one version for this sync run."""

    tenant_id: str
    job_id: str
    workflow_id: str
    created_by: str = ""


class SnapshotResult(BaseModel):
    dataset_id: str
    version: int
    cases: int = 0
    replayed: bool = False


class PageInput(BaseModel):
    """One page: read after the stored checkpoint, write the sink, advance the checkpoint."""

    tenant_id: str
    job_id: str
    workflow_id: str
    expected_pages: int = Field(description="pages_done the checkpoint must hold (compare-and-set).")
    page_size: int
    seq: int


class PageResult(BaseModel):
    pages_done: int
    records: int
    has_more: bool
    replayed: bool = Field(False, description="The page was committed by an earlier attempt.")
    documents: int = Field(0, description="Knowledge-base ingestions this page started.")


class FinishInput(BaseModel):
    tenant_id: str
    job_id: str
    workflow_id: str
    status: str
    pages: int
    records: int
    pages_done: int
    error: str | None = None
    seq: int
    created_by: str = ""
    dataset_version: int | None = None


# --- pipeline connector steps ---------------------------------------------------------------


class PlanInput(BaseModel):
    """``connector_plan``: what the workflow must know before a connector step runs."""

    tenant_id: str
    workflow_id: str
    connection: str
    action: str


class ConnectorPlan(BaseModel):
    connection_id: str
    type: str
    blocking: bool
    compensation: str | None = None


class ConnectorCall(BaseModel):
    """``connector_action``: run one action (or, with ``undo_of``, the declared undo of a step)."""

    tenant_id: str
    workflow_id: str
    step: dict[str, Any]
    idempotency_key: str
    context: StepContext = Field(default_factory=StepContext)
    events: EventSeqs | None = None
    undo_of: str | None = Field(None, description="Step id whose declared compensation to run.")
