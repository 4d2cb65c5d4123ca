"""``/v1/knowledge-bases``: knowledge bases, documents (ingested by a workflow), search and answers.

Uploads are checked (type, size, magic number), stored in the payload table and indexed by the
``IngestDocument`` workflow; the same content in the same knowledge base is deduplicated by hash.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, field_validator, model_validator
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy

from api.deps import AppState, PrincipalDep, SessionDep, StateDep, TemporalDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor
from api.schemas import StrictModel
from core.contracts import SA_CREATED_BY, SA_RUN_KIND, SA_TENANT_ID
from core.db.rag_models import EMBEDDING_DIMS, KbDocument, KnowledgeBase
from core.errors import Conflict, NotFound, ValidationFailed
from core.governance.audit import append
from core.identity import Permission, Principal
from core.orchestration.contracts import Strategy
from core.providers.catalog import Capability
from core.providers.registry import ProviderRegistry
from core.rag.contracts import REEMBED_RUN_KIND, REEMBED_WORKFLOW_NAME, ReembedInput
from core.rag.search import Rerank, SearchMode
from core.rag.settings import LOCAL_MODEL, rag_settings
from core.rag.store import RagRepository
from core.runs import RunRepository, workflow_id

router = APIRouter(tags=["knowledge-bases"])
RUN_TIMEOUT = dt.timedelta(hours=6)


class KbCreate(StrictModel):
    """A new knowledge base."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    embedding_model: str = Field(
        LOCAL_MODEL, description="local/all-minilm-l6-v2 or a catalog embedding model."
    )
    chunk_tokens: int = Field(200, ge=32, le=250)
    chunk_overlap: int = Field(30, ge=0, le=100)


class KbUpdate(StrictModel):
    """Rename or describe a knowledge base, or switch its embedding model (re-embeds every chunk
    in a ``ReembedKnowledgeBase`` run; search keeps working meanwhile)."""

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    embedding_model: str | None = Field(
        None,
        description=f"A new embedding model with {EMBEDDING_DIMS} dimensions: starts a re-embedding run.",
    )


class KbOut(BaseModel):
    id: str
    name: str
    description: str
    embedding_model: str
    pending_embedding_model: str | None = None
    chunk_tokens: int
    chunk_overlap: int
    created_at: dt.datetime
    reembed_run_id: str | None = Field(None, description="Set on the update that started a re-embedding.")


class TextDocument(StrictModel):
    """A JSON upload: the document's text inline."""

    title: str = Field(min_length=1, max_length=300)
    text: str = Field(min_length=1)
    content_type: str = "text/plain"
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict)


class DocumentOut(BaseModel):
    id: str
    knowledge_base_id: str
    title: str
    content_type: str
    sha256: str
    size: int
    status: str
    chunk_count: int
    metadata: dict[str, Any]
    run_id: str
    error: str | None = None
    duplicate: bool = False
    created_at: dt.datetime


class RerankSpec(StrictModel):
    """The stage after fusion: ``none``, ``local`` or ``model`` (a provider model, listwise)."""

    method: Rerank = Rerank.none
    model: str | None = Field(None, description="Catalog chat model id (method 'model').")
    top_n: int = Field(10, ge=2, le=50, description="Fused candidates the model reorders.")

    @model_validator(mode="after")
    def _model_needs_a_model(self) -> RerankSpec:
        if (self.method is Rerank.model) != (self.model is not None):
            raise ValueError("rerank method 'model' needs a model, and only it takes one")
        return self


class RerankOut(BaseModel):
    """What a model rerank did: ``applied`` false when the reply held no ranking (fused order kept)."""

    method: str
    model: str
    applied: bool
    error: str | None = None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


class SearchRequest(StrictModel):
    query: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(5, ge=1, le=50)
    mode: SearchMode = SearchMode.hybrid
    filters: dict[str, str | int | float | bool] | None = Field(
        None, description="Document metadata equality."
    )
    mmr: bool = False
    rerank: Rerank | RerankSpec = Field(
        Rerank.none,
        description="'local': re-score the fused candidates by query cosine + keyword score; "
        "{method: 'model', model, top_n}: a catalog chat model reorders the first top_n candidates.",
    )

    @field_validator("rerank")
    @classmethod
    def _rerank_spec(cls, value: Rerank | RerankSpec) -> RerankSpec:
        return value if isinstance(value, RerankSpec) else RerankSpec(method=value)


class SearchHit(BaseModel):
    document_id: str
    document_title: str
    chunk_index: int
    text: str
    start: int | None
    end: int | None
    score: float
    vector_score: float | None
    keyword_score: float | None
    metadata: dict[str, Any]


class NexusAnswer(StrictModel):
    """How a NEXUS run answers (``mode: "nexus"``); see ``POST /v1/nexus/runs`` for each field."""

    strategy: Strategy = Strategy.adaptive
    models: list[str] | None = Field(None, min_length=1, max_length=9)
    skip_planning: bool = Field(
        True, description="One grounded subtask (default), or let the planner split it."
    )
    planner_model: str | None = None
    synthesizer_model: str | None = None
    judge_model: str | None = None
    budget_usd: Decimal = Field(Decimal("1.00"), gt=0, le=Decimal(1000))
    confidence_target: float = Field(0.8, gt=0, le=1)
    max_tokens: int = Field(512, gt=0, le=8192)


class AnswerRequest(StrictModel):
    """``mode: "model"`` answers now with one model; ``mode: "nexus"`` starts a NEXUS run grounded
    on this knowledge base (202 with the run; its answer cites ``[K:<chunk id>]``)."""

    mode: Literal["model", "nexus"] = "model"
    model: str | None = Field(None, description="The answering model (mode 'model').")
    nexus: NexusAnswer | None = Field(None, description="The run's settings (mode 'nexus').")
    query: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(5, ge=1, le=20)
    min_score: float | None = Field(None, ge=-1, le=1)
    max_tokens: int = Field(512, ge=1, le=4096)

    @model_validator(mode="after")
    def _mode_fields(self) -> AnswerRequest:
        if self.mode == "model" and (self.model is None or self.nexus is not None):
            raise ValueError("mode 'model' needs a model (and no nexus settings)")
        if self.mode == "nexus" and self.model is not None:
            raise ValueError("mode 'nexus' takes its models in 'nexus'")
        return self


class AnswerUsage(BaseModel):
    """What the answering model's call cost (it is logged in the gateway's inference logs)."""

    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


class AnswerOut(BaseModel):
    answer: str
    found: bool
    model: str | None
    citations: list[SearchHit]
    usage: AnswerUsage | None = Field(
        None, description="Present when a model was called (absent when retrieval found nothing)."
    )


def _kb_out(kb: KnowledgeBase) -> KbOut:
    return KbOut(
        id=str(kb.id),
        name=kb.name,
        description=kb.description,
        embedding_model=kb.embedding_model,
        pending_embedding_model=kb.pending_embedding_model,
        chunk_tokens=kb.chunk_tokens,
        chunk_overlap=kb.chunk_overlap,
        created_at=kb.created_at,
    )


def _doc_out(doc: KbDocument, duplicate: bool = False) -> DocumentOut:
    return DocumentOut(
        id=str(doc.id),
        knowledge_base_id=str(doc.kb_id),
        title=doc.title,
        content_type=doc.content_type,
        sha256=doc.sha256,
        size=doc.size,
        status=doc.status,
        chunk_count=doc.chunk_count,
        metadata=doc.metadata_,
        run_id=doc.workflow_id,
        error=doc.error,
        duplicate=duplicate,
        created_at=doc.created_at,
    )


def _registry(state: AppState) -> ProviderRegistry | None:
    return state.gateway.registry if state.gateway else None


def _check_embedding_model(state: AppState, principal: Principal, model: str) -> None:
    if model == LOCAL_MODEL:
        return
    catalog = state.gateway.catalog if state.gateway else None
    if catalog is None or not principal.allows_scope(f"models:{model}"):
        raise NotFound(f"model {model!r} does not exist or is not available to this key")
    entry = catalog.get(model)
    if Capability.embeddings not in entry.capabilities or entry.embedding_dims != EMBEDDING_DIMS:
        raise ValidationFailed(f"knowledge bases need an embedding model with {EMBEDDING_DIMS} dimensions")


def _after(cursor: str | None) -> tuple[dt.datetime, str] | None:
    values = decode_cursor(cursor)
    if values is None:
        return None
    try:
        return dt.datetime.fromisoformat(str(values[0])), str(uuid.UUID(str(values[1])))
    except (ValueError, IndexError):
        raise ValidationFailed("invalid cursor") from None


@router.post("/knowledge-bases", response_model=KbOut, status_code=201)
async def create_kb(body: KbCreate, session: SessionDep, principal: PrincipalDep, state: StateDep) -> KbOut:
    """Create a knowledge base with its embedding model and chunking settings."""
    principal.require(Permission.runs_write)
    if body.chunk_overlap >= body.chunk_tokens:
        raise ValidationFailed("chunk_overlap must be smaller than chunk_tokens")
    _check_embedding_model(state, principal, body.embedding_model)
    repo = RagRepository.from_session(session)
    if await repo.kb_by_name(principal.tenant_id, body.name) is not None:
        raise Conflict("a knowledge base with this name exists")
    kb = await repo.create_kb(principal.tenant_id, created_by=principal.actor, **body.model_dump())
    await append(
        session, actor=principal.actor, action="kb.create", tenant_id=principal.tenant_id, target=str(kb.id)
    )
    await session.refresh(kb)
    return _kb_out(kb)


@router.get("/knowledge-bases")
async def list_kbs(
    session: SessionDep, principal: PrincipalDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> dict[str, Any]:
    """The tenant's knowledge bases, newest first."""
    principal.require(Permission.runs_read)
    rows = await RagRepository.from_session(session).list_kbs(principal.tenant_id, limit, _after(cursor))
    nxt = encode_cursor([rows[-1].created_at.isoformat(), str(rows[-1].id)]) if len(rows) == limit else None
    return {"data": [_kb_out(kb).model_dump(mode="json") for kb in rows], "next_cursor": nxt}


@router.get("/knowledge-bases/{kb_id}", response_model=KbOut)
async def get_kb(kb_id: str, session: SessionDep, principal: PrincipalDep) -> KbOut:
    """One knowledge base."""
    principal.require(Permission.runs_read)
    return _kb_out(await RagRepository.from_session(session).get_kb(principal.tenant_id, kb_id))


@router.patch("/knowledge-bases/{kb_id}", response_model=KbOut)
async def update_kb(
    kb_id: str,
    body: KbUpdate,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
) -> KbOut:
    """Rename or re-describe a knowledge base, or switch its embedding model.

    A new ``embedding_model`` is recorded as pending and a ``ReembedKnowledgeBase`` run re-embeds
    every chunk; the model switches in its last step (409 while another switch is under way;
    repeating the pending model restarts the run, which resumes where the chunks are)."""
    principal.require(Permission.runs_write)
    repo = RagRepository.from_session(session)
    kb = await repo.get_kb(principal.tenant_id, kb_id)
    target = body.embedding_model
    changes = body.model_dump(exclude_none=True, exclude={"embedding_model"})
    if target is None or (target == kb.embedding_model and kb.pending_embedding_model is None):
        return _kb_out(await repo.update_kb(kb, **changes))
    _check_embedding_model(state, principal, target)
    if kb.pending_embedding_model not in (None, target):
        raise Conflict(f"the knowledge base is already switching to {kb.pending_embedding_model!r}")
    tenant = principal.tenant_id
    wid = workflow_id(REEMBED_RUN_KIND, tenant, uuid.uuid4().hex)
    # Committed before the start, so the run's switch step finds the pending model.
    async with state.sessions() as write, write.begin():
        locked = await RagRepository.from_session(write).lock_kb(tenant, kb.id)
        if locked.pending_embedding_model not in (None, target):
            raise Conflict(f"the knowledge base is already switching to {locked.pending_embedding_model!r}")
        await RagRepository.from_session(write).update_kb(locked, pending_embedding_model=target, **changes)
    await session.refresh(kb)
    await RunRepository.from_session(session).create(
        tenant_id=tenant,
        workflow_id=wid,
        kind=REEMBED_RUN_KIND,
        created_by=principal.actor,
        input_summary={"knowledge_base_id": str(kb.id), "from": kb.embedding_model, "to": target},
    )
    inp = ReembedInput(
        tenant_id=tenant,
        kb_id=str(kb.id),
        target_model=target,
        batch=rag_settings(state.settings).embed_batch,
        created_by=principal.actor,
    )
    await temporal.start_workflow(
        REEMBED_WORKFLOW_NAME,
        inp,
        id=wid,
        task_queue=state.settings.temporal.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SA_TENANT_ID, tenant),
                SearchAttributePair(SA_RUN_KIND, REEMBED_RUN_KIND),
                SearchAttributePair(SA_CREATED_BY, principal.actor),
            ]
        ),
        execution_timeout=RUN_TIMEOUT,
    )
    await append(
        session,
        actor=principal.actor,
        action="kb.reembed",
        tenant_id=tenant,
        target=str(kb.id),
        data={"from": kb.embedding_model, "to": target, "run_id": wid},
    )
    out = _kb_out(kb)
    out.reembed_run_id = wid
    return out


@router.delete("/knowledge-bases/{kb_id}", status_code=204)
async def delete_kb(kb_id: str, session: SessionDep, principal: PrincipalDep) -> Response:
    """Delete a knowledge base, its documents, chunks and vectors (audited with counts)."""
    principal.require(Permission.runs_write)
    repo = RagRepository.from_session(session)
    kb = await repo.get_kb(principal.tenant_id, kb_id)
    docs, chunks = await repo.delete_kb(principal.tenant_id, kb.id)
    await append(
        session,
        actor=principal.actor,
        action="kb.delete",
        tenant_id=principal.tenant_id,
        target=str(kb.id),
        data={"documents": docs, "chunks": chunks},
    )
    return Response(status_code=204)
