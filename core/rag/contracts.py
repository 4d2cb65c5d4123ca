"""Contracts of the ``IngestDocument`` workflow and its activities: pure pydantic, no I/O.

Document bytes and parsed text travel as :class:`PayloadRef` claim-checks; chunk texts and
vectors never enter the workflow history (activities read and write them in Postgres).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.orchestration.contracts import PayloadRef

WORKFLOW_NAME = "IngestDocument"
RUN_KIND = "ingest"


class DocumentStatus:
    """Values of ``kb_documents.status``; only ``ready`` documents are searchable."""

    pending = "pending"
    indexing = "indexing"
    ready = "ready"
    failed = "failed"


class IngestInput(BaseModel):
    """Input of ``IngestDocument``: one stored upload of one document of one knowledge base."""

    tenant_id: str
    kb_id: str
    document_id: str
    source: PayloadRef
    content_type: str
    embedding_model: str
    chunk_tokens: int = 200
    chunk_overlap: int = 30
    embed_batch: int = 32
    created_by: str = ""


class IngestResult(BaseModel):
    """Result of ``IngestDocument``."""

    document_id: str
    status: str
    chunk_count: int = 0


class ParseInput(BaseModel):
    """Input of ``rag_parse``."""

    tenant_id: str
    workflow_id: str
    document_id: str
    source: PayloadRef
    content_type: str


class ParseResult(BaseModel):
    """The parsed text (stored) and its structure (``markdown`` or ``text``)."""

    text: PayloadRef
    structure: str
    chars: int


class PiiHookInput(BaseModel):
    """Input of ``rag_pii_hook``: the governance work will redact or refuse here."""

    tenant_id: str
    workflow_id: str
    document_id: str
    text: PayloadRef


class PiiHookResult(BaseModel):
    """The text to index (unchanged today) and how many spans were redacted."""

    text: PayloadRef
    redactions: int = 0


class ChunkInput(BaseModel):
    """Input of ``rag_chunk``."""

    tenant_id: str
    workflow_id: str
    document_id: str
    text: PayloadRef
    structure: str
    chunk_tokens: int
    chunk_overlap: int


class ChunkResult(BaseModel):
    """How many chunks the document has (all stored, none embedded yet)."""

    chunk_count: int


class EmbedBatchInput(BaseModel):
    """Input of ``rag_embed_batch``: embed chunks ``first`` ≤ index < ``last`` still without a
    vector of the knowledge base's model.

    The model is read from the knowledge base when the batch runs (its pending model while a
    switch is under way), not taken from ``embedding_model``: that is the model at upload time,
    kept for histories."""

    tenant_id: str
    workflow_id: str
    document_id: str
    embedding_model: str
    first: int = Field(ge=0)
    last: int = Field(ge=0)


class EmbedBatchResult(BaseModel):
    """How many vectors this call wrote (0 when a retry found them all written)."""

    embedded: int


class FinalizeInput(BaseModel):
    """Input of ``rag_finalize``: flip the document to ``ready`` (or ``failed``)."""

    tenant_id: str
    workflow_id: str
    document_id: str
    chunk_count: int = 0
    error: str | None = None


class FinalizeResult(BaseModel):
    """The document's final status and chunk count.

    ``status`` stays ``indexing`` (with ``stale`` chunks) when the knowledge base switched
    embedding model after those chunks were embedded: the workflow re-runs its batches (which
    re-embed them with the current model) and finalizes again."""

    status: str
    chunk_count: int
    stale: int = 0


REEMBED_WORKFLOW_NAME = "ReembedKnowledgeBase"
REEMBED_RUN_KIND = "reembed"


class ReembedInput(BaseModel):
    """Input of ``ReembedKnowledgeBase``: move every embedded chunk of a knowledge base to ``target``."""

    tenant_id: str
    kb_id: str
    target_model: str
    batch: int = Field(32, ge=1, le=512)
    created_by: str = ""
    done: int = 0  # chunks re-embedded by earlier runs of a continued-as-new chain
    seq: int = 0  # last event seq of earlier runs of the chain


class ReembedResult(BaseModel):
    """Result of ``ReembedKnowledgeBase``."""

    kb_id: str
    embedding_model: str
    reembedded: int


class ReembedBatchInput(BaseModel):
    """Input of ``rag_reembed_batch``: up to ``batch`` chunks whose model is not ``target_model``."""

    tenant_id: str
    workflow_id: str
    kb_id: str
    target_model: str
    batch: int = Field(ge=1)


class ReembedBatchResult(BaseModel):
    """How many chunks this call re-embedded (0: none left on another model)."""

    embedded: int


class ReembedSwitchInput(BaseModel):
    """Input of ``rag_reembed_switch``: make ``target_model`` the knowledge base's model."""

    tenant_id: str
    workflow_id: str
    kb_id: str
    target_model: str


class ReembedSwitchResult(BaseModel):
    """``switched`` once no chunk is left on another model (else ``remaining`` to re-embed)."""

    switched: bool
    remaining: int = 0
