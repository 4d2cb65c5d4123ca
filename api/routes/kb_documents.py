"""``/v1/knowledge-bases/{id}/documents``, ``/search`` and ``/answer``.

An upload (multipart ``file`` + optional ``title``/``metadata`` fields, or JSON ``{title, text,
content_type}``) is checked, stored, and indexed by an ``IngestDocument`` run (202 + run id).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from temporalio.client import Client

from api.deps import AppState, PrincipalDep, SessionDep, StateDep, TemporalDep
from api.gateway.routes import provider_problem, request_id_of
from api.gateway.service import CallContext, Gateway, candidates_for, require_chat_scope
from api.gateway.service import chat as gateway_service_chat
from api.gateway.service import embed as gateway_service_embed
from api.pagination import CursorQuery, LimitQuery, encode_cursor
from api.routes.knowledge_bases import (
    RUN_TIMEOUT,
    AnswerOut,
    AnswerRequest,
    AnswerUsage,
    DocumentOut,
    NexusAnswer,
    RerankOut,
    RerankSpec,
    SearchHit,
    SearchRequest,
    TextDocument,
    _after,
    _doc_out,
    _registry,
)
from api.routes.nexus import NexusRunRequest, start_nexus_run
from api.routes.nexus_view import NexusRunOut
from api.run_start import start_once
from core.db.rag_models import KnowledgeBase
from core.errors import ValidationFailed
from core.governance.audit import append
from core.identity import Permission, Principal
from core.providers.cost import cost_usd
from core.providers.errors import ProviderError
from core.providers.registry import ProviderRegistry
from core.providers.types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse
from core.rag import answer as answering
from core.rag.contracts import RUN_KIND, WORKFLOW_NAME, DocumentStatus, IngestInput
from core.rag.embed import Embedder, ProviderEmbedder, embedder_for
from core.rag.parse import check_upload, resolve_content_type
from core.rag.rerank import ChatFn, model_rerank
from core.rag.search import Rerank, Result, search
from core.rag.settings import LOCAL_MODEL, rag_settings
from core.rag.store import RagRepository
from core.rag.uploads import put_bytes
from core.runs import RunRepository, workflow_id

router = APIRouter(tags=["knowledge-bases"])


async def _read_upload(request: Request, max_bytes: int) -> tuple[str, str, bytes, dict[str, Any]]:
    """(title, content_type, bytes, metadata) of a multipart or JSON upload."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ValidationFailed("multipart uploads need a 'file' part")
        data = await upload.read(max_bytes + 1)
        content_type = resolve_content_type(upload.content_type, upload.filename)
        title = str(form.get("title") or upload.filename or "untitled")[:300]
        try:
            metadata = json.loads(str(form.get("metadata") or "{}"))
        except ValueError:
            raise ValidationFailed("metadata must be a JSON object") from None
        if not isinstance(metadata, dict):
            raise ValidationFailed("metadata must be a JSON object")
        return title, content_type, data, metadata
    raw = await request.body()
    if len(raw) > 2 * max_bytes:
        raise ValidationFailed(f"the document exceeds the limit of {max_bytes} bytes")
    try:
        body = TextDocument.model_validate_json(raw)
    except ValidationError:
        raise ValidationFailed("body must be {title, text, content_type, metadata}") from None
    content_type = resolve_content_type(body.content_type, None)
    return body.title, content_type, body.text.encode("utf-8"), dict(body.metadata)


async def _start(temporal: Client, wid: str, inp: IngestInput, principal: Principal, queue: str) -> None:
    """Start the ingestion once; a running or closed twin under the same id is left alone."""
    await start_once(
        temporal,
        WORKFLOW_NAME,
        inp,
        workflow_id=wid,
        kind=RUN_KIND,
        principal=principal,
        task_queue=queue,
        execution_timeout=RUN_TIMEOUT,
    )


@router.post("/knowledge-bases/{kb_id}/documents", response_model=DocumentOut, status_code=202)
async def upload_document(
    kb_id: str,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> DocumentOut:
    """Upload a document (202 + run id). The same content in this knowledge base (by SHA-256) or
    the same ``Idempotency-Key`` returns the existing document (``duplicate: true``)."""
    principal.require(Permission.runs_write)
    cfg = rag_settings(state.settings)
    tenant = principal.tenant_id
    repo = RagRepository.from_session(session)
    kb: KnowledgeBase = await repo.get_kb(tenant, kb_id)
    runs = RunRepository.from_session(session)
    if idempotency_key is not None:
        existing_run = await runs.by_idempotency_key(tenant, RUN_KIND, idempotency_key)
        if existing_run is not None:
            response.headers["Idempotent-Replayed"] = "true"
            doc_id = existing_run.input_summary.get("document_id", "")
            return _doc_out(await repo.get_document(tenant, kb.id, doc_id), duplicate=True)
    title, content_type, data, metadata = await _read_upload(request, cfg.max_upload_bytes)
    check_upload(data, content_type, cfg.max_upload_bytes)
    digest = hashlib.sha256(data).hexdigest()
    doc_id = uuid.uuid4()
    wid = workflow_id(RUN_KIND, tenant, doc_id.hex)
    # Stored and committed before the start, so the first activity can read them.
    async with state.sessions() as write, write.begin():
        source = await put_bytes(write, tenant, data, content_type, idempotency_key=f"kb:{kb.id}:{digest}")
        doc, created = await RagRepository.from_session(write).insert_document(
            tenant,
            id=doc_id,
            kb_id=kb.id,
            title=title,
            content_type=content_type,
            sha256=digest,
            size=len(data),
            status=DocumentStatus.pending,
            source_payload_id=uuid.UUID(source.id),
            workflow_id=wid,
            chunk_count=0,
            metadata_=metadata,
            created_by=principal.actor,
        )
    if not created and doc.status in (DocumentStatus.ready, DocumentStatus.failed):
        response.headers["Idempotent-Replayed"] = "true"
        return _doc_out(doc, duplicate=True)
    # New, or a twin still pending/indexing: (re)ensure its run exists — starts are idempotent.
    await runs.create(
        tenant_id=tenant,
        workflow_id=doc.workflow_id,
        kind=RUN_KIND,
        created_by=principal.actor,
        idempotency_key=idempotency_key if created else None,
        input_summary={"document_id": str(doc.id), "knowledge_base_id": str(kb.id), "title": doc.title},
    )
    inp = IngestInput(
        tenant_id=tenant,
        kb_id=str(kb.id),
        document_id=str(doc.id),
        source=source,
        content_type=doc.content_type,
        # During a model switch new documents go straight to the new model.
        embedding_model=kb.pending_embedding_model or kb.embedding_model,
        chunk_tokens=kb.chunk_tokens,
        chunk_overlap=kb.chunk_overlap,
        embed_batch=cfg.embed_batch,
        created_by=principal.actor,
    )
    await _start(temporal, doc.workflow_id, inp, principal, state.settings.temporal.task_queue)
    if created:
        await append(
            session,
            actor=principal.actor,
            action="kb.document.upload",
            tenant_id=tenant,
            target=str(doc.id),
            data={"knowledge_base_id": str(kb.id), "sha256": digest, "size": len(data)},
        )
    return _doc_out(doc, duplicate=not created)


@router.get("/knowledge-bases/{kb_id}/documents")
async def list_documents(
    kb_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """The knowledge base's documents, newest first, with their indexing status."""
    principal.require(Permission.runs_read)
    repo = RagRepository.from_session(session)
    kb = await repo.get_kb(principal.tenant_id, kb_id)
    rows = await repo.list_documents(principal.tenant_id, kb.id, limit, _after(cursor))
    nxt = encode_cursor([rows[-1].created_at.isoformat(), str(rows[-1].id)]) if len(rows) == limit else None
    return {"data": [_doc_out(d).model_dump(mode="json") for d in rows], "next_cursor": nxt}


@router.get("/knowledge-bases/{kb_id}/documents/{document_id}", response_model=DocumentOut)
async def get_document(
    kb_id: str, document_id: str, session: SessionDep, principal: PrincipalDep
) -> DocumentOut:
    """One document and its status (pending, indexing, ready, failed)."""
    principal.require(Permission.runs_read)
    repo = RagRepository.from_session(session)
    kb = await repo.get_kb(principal.tenant_id, kb_id)
    return _doc_out(await repo.get_document(principal.tenant_id, kb.id, document_id))


@router.delete("/knowledge-bases/{kb_id}/documents/{document_id}", status_code=204)
async def delete_document(
    kb_id: str, document_id: str, session: SessionDep, principal: PrincipalDep
) -> Response:
    """Erase a document with its chunks and vectors; the audit event records the counts."""
    principal.require(Permission.runs_write)
    repo = RagRepository.from_session(session)
    kb = await repo.get_kb(principal.tenant_id, kb_id)
    doc = await repo.get_document(principal.tenant_id, kb.id, document_id)
    removed = await repo.delete_document(doc)
    await append(
        session,
        actor=principal.actor,
        action="kb.document.delete",
        tenant_id=principal.tenant_id,
        target=str(doc.id),
        data={"knowledge_base_id": str(kb.id), "sha256": doc.sha256, "chunks_deleted": removed},
    )
    return Response(status_code=204)


def _hit(r: Result) -> SearchHit:
    return SearchHit(
        document_id=r.hit.document_id,
        document_title=r.hit.document_title,
        chunk_index=r.hit.chunk_index,
        text=r.hit.text,
        start=r.hit.start,
        end=r.hit.end,
        score=r.score,
        vector_score=r.vector_score,
        keyword_score=r.keyword_score,
        metadata=r.hit.metadata,
    )


def gateway_chat(state: AppState, principal: Principal, request_id: str) -> ChatFn:
    """A chat function over the gateway's admitted path: the call is rate-limited, budgeted,
    logged with its cost (one inference log row per ``request_id``) and tried once; provider
    errors become problem+json (``upstream_<kind>``)."""
    gw = state.gateway
    if gw is None:
        raise ValidationFailed("model calls are not available here")
    require_chat_scope(principal)

    async def call(req: ChatRequest) -> ChatResponse:
        ctx = candidates_for(gw, principal, req.model, req)
        ctx.request_id = request_id
        try:
            resp, _, _ = await gateway_service_chat(gw, ctx, req, use_cache=False, force_cache=False)
        except ProviderError as err:
            raise provider_problem(err) from None
        return resp

    return call


class GatewayEmbeddings:
    """What :class:`core.rag.embed.ProviderEmbedder` uses of a provider registry (``embed``), over
    the gateway's admitted path: each query embedding is rate-limited, budgeted, tried once and
    logged with its cost (request ids ``<request_id>:embed``, ``…:embed-2``, …); provider errors
    become problem+json (``upstream_<kind>``). The model is the knowledge base's own (checked
    against the key's scopes when it was chosen), so the searching key needs no model scope."""

    def __init__(self, gw: Gateway, principal: Principal, request_id: str) -> None:
        self._gw = gw
        self._principal = principal
        self._request_id = request_id
        self._calls = 0
        self.cost_usd = Decimal(0)

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """One billed embedding call."""
        self._calls += 1
        suffix = "" if self._calls == 1 else f"-{self._calls}"
        ctx = CallContext(
            principal=self._principal,
            request_id=f"{self._request_id}:embed{suffix}",
            requested=req.model,
            candidates=[self._gw.catalog.get(req.model)],
            route_group=None,
            stream=False,
        )
        try:
            resp, model = await gateway_service_embed(self._gw, ctx, req)
        except ProviderError as err:
            raise provider_problem(err) from None
        self.cost_usd += cost_usd(resp.usage, model.prices)
        return resp


def query_embedder(state: AppState, principal: Principal, model: str, request_id: str) -> Embedder:
    """The embedder of a search query: the local model (free), or a provider model billed
    through the gateway (:class:`GatewayEmbeddings`)."""
    if model == LOCAL_MODEL or state.gateway is None:
        return embedder_for(model, _registry(state))
    billed = GatewayEmbeddings(state.gateway, principal, request_id)
    return ProviderEmbedder(cast(ProviderRegistry, billed), model)


def _cost(state: AppState) -> Callable[[ChatResponse], Decimal]:
    def cost(resp: ChatResponse) -> Decimal:
        catalog = state.gateway.catalog if state.gateway else None
        return cost_usd(resp.usage, catalog.get(resp.model).prices) if catalog else Decimal(0)

    return cost


async def _search(
    state: AppState,
    session: Any,
    principal: Principal,
    kb_id: str,
    body: SearchRequest,
    request_id: str = "",
) -> tuple[list[Result], RerankOut | None]:
    repo = RagRepository.from_session(session)
    kb = await repo.get_kb(principal.tenant_id, kb_id)
    pending = kb.pending_embedding_model
    spec = body.rerank if isinstance(body.rerank, RerankSpec) else RerankSpec(method=body.rerank)
    by_model = spec.method is Rerank.model
    rid = request_id or uuid.uuid4().hex
    chat = gateway_chat(state, principal, f"{rid}:rerank") if by_model else None
    results = await search(
        repo,
        query_embedder(state, principal, kb.embedding_model, rid),
        tenant_id=principal.tenant_id,
        kb_id=kb.id,
        query=body.query,
        top_k=max(body.top_k, spec.top_n) if by_model else body.top_k,
        mode=body.mode,
        filters=body.filters,
        use_mmr=body.mmr,
        rerank=Rerank.local if spec.method is Rerank.local else Rerank.none,
        pending_embedder=query_embedder(state, principal, pending, f"{rid}:pending") if pending else None,
    )
    if chat is None or spec.model is None:
        return results, None
    out = await model_rerank(chat, spec.model, body.query, results, spec.top_n, cost=_cost(state))
    summary = RerankOut(
        method=Rerank.model.value,
        model=out.model,
        applied=out.applied,
        error=out.error,
        input_tokens=out.usage.input_tokens,
        output_tokens=out.usage.output_tokens,
        cost_usd=out.cost_usd,
    )
    return out.results[: body.top_k], summary


@router.post("/knowledge-bases/{kb_id}/search")
async def search_kb(
    kb_id: str,
    body: SearchRequest,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
) -> dict[str, Any]:
    """Hybrid (vector + full-text, RRF), vector-only or keyword-only search of ready documents,
    optionally reranked locally or by a provider model (then ``rerank`` says what it did)."""
    principal.require(Permission.runs_read)
    results, reranked = await _search(state, session, principal, kb_id, body, request_id_of(request))
    out: dict[str, Any] = {"data": [_hit(r).model_dump(mode="json") for r in results]}
    if reranked is not None:
        out["rerank"] = reranked.model_dump(mode="json")
    return out


@router.post(
    "/knowledge-bases/{kb_id}/answer",
    response_model=AnswerOut,
    response_model_exclude_unset=True,
    responses={202: {"model": NexusRunOut, "description": "mode 'nexus': the started run"}},
)
async def answer_kb(
    kb_id: str,
    body: AnswerRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    temporal: TemporalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> AnswerOut | JSONResponse:
    """Answer from the knowledge base with citations, or say it is not found there; or (mode
    ``nexus``) start a NEXUS run grounded on it and answer 202 with the run (follow it at
    ``/v1/nexus/runs/{id}``; the same ``Idempotency-Key`` returns the same run)."""
    principal.require(Permission.runs_write)
    if body.mode == "nexus":
        kb = await RagRepository.from_session(session).get_kb(principal.tenant_id, kb_id)
        settings = body.nexus or NexusAnswer()
        run = NexusRunRequest(
            task=body.query, knowledge_base_ids=[str(kb.id)], **settings.model_dump(exclude_none=True)
        )
        out = await start_nexus_run(run, response, session, principal, state, temporal, idempotency_key)
        headers = {k: v for k, v in response.headers.items() if k.lower() == "idempotent-replayed"}
        return JSONResponse(out.model_dump(mode="json"), status_code=202, headers=headers)
    assert body.model is not None  # the request schema requires it in mode "model"
    registry = _registry(state)
    if registry is None or not principal.allows_scope(f"models:{body.model}"):
        raise ValidationFailed("the model is not available to this key")
    registry.catalog.get(body.model)
    rid = request_id_of(request)
    chat = gateway_chat(state, principal, f"{rid}:answer")
    query = SearchRequest(query=body.query, top_k=body.top_k)
    results, _ = await _search(state, session, principal, kb_id, query, rid)
    min_score = (
        body.min_score if body.min_score is not None else rag_settings(state.settings).answer_min_score
    )
    out_answer = await answering.answer_with(
        chat, body.model, body.query, results, min_score, body.max_tokens, cost=_cost(state)
    )
    shaped = AnswerOut(
        answer=out_answer.text,
        found=out_answer.found,
        model=out_answer.model,
        citations=[_hit(r) for r in out_answer.sources],
    )
    if out_answer.called:  # only then is ``usage`` set (and shown: the response omits unset fields)
        shaped.usage = AnswerUsage(
            input_tokens=out_answer.usage.input_tokens,
            output_tokens=out_answer.usage.output_tokens,
            cost_usd=out_answer.cost_usd,
        )
    return shaped
