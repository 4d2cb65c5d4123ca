"""Hybrid retrieval: vector top-k and full-text top-k fused by reciprocal rank fusion, then MMR.

RRF (Cormack et al., 2009): ``score(d) = Σ_r 1 / (k + rank_r(d))`` over the retrievers that
returned ``d`` (ranks from 1, ``k = 60``). MMR (Carbonell & Goldstein, 1998) re-orders the fused
candidates to balance relevance against similarity to what was already picked.

Local rerank (``rerank="local"``): the fused candidates are re-scored by
``LOCAL_RERANK_ALPHA · cos(q, v_d) + (1 − LOCAL_RERANK_ALPHA) · kw(d) / max_c kw(c)`` where
``cos(q, v_d)`` is the cosine between the query vector and the chunk's stored vector (both
L2-normalised, from the same model; 0 when the chunk has no vector of that model) and ``kw`` the
chunk's ``ts_rank_cd`` keyword score normalised by the best keyword score among the candidates
(0 when it did not match). Unlike RRF, which only sees ranks, this uses the magnitudes of both
signals; it needs no extra model and costs one vector fetch of the candidates.

While a knowledge base switches embedding model (``pending_embedder``), the query is embedded
with both models and each is compared only with the chunks that carry its vectors; the two
vector lists are merged by cosine score into the one ``vector`` ranking.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from core.providers.types import EmbeddingRequest, EmbeddingResponse
from core.rag.embed import Embedder
from core.rag.store import Hit, RagRepository

# (request, n) -> response: the n-th (from 1) provider embedding call of a search, billed by the caller
EmbedCall = Callable[[EmbeddingRequest, int], Awaitable[EmbeddingResponse]]
RRF_K = 60
LOCAL_RERANK_ALPHA = 0.7
_WORD = re.compile(r"[0-9A-Za-z\u00C0-\u024F]+")


class SearchMode(StrEnum):
    """Which retrievers run."""

    hybrid = "hybrid"
    vector = "vector"
    keyword = "keyword"


class Rerank(StrEnum):
    """The optional stage after fusion."""

    none = "none"
    local = "local"
    model = "model"  # a provider model reorders the candidates: core.rag.rerank, run by the caller


@dataclass
class Result:
    """A fused result: the chunk, its fused score and each retriever's rank/score."""

    hit: Hit
    score: float
    vector_score: float | None = None
    keyword_score: float | None = None
    ranks: dict[str, int] = field(default_factory=dict)


class BilledEmbeddings:
    """Stands in for the provider registry where only ``embed`` is used (the query embeddings of
    :class:`core.rag.embed.ProviderEmbedder`): each call goes through ``call``, which bills it
    (the local model never reaches it, so it stays free)."""

    def __init__(self, call: EmbedCall) -> None:
        self._call = call
        self.calls = 0

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """One billed embedding call."""
        self.calls += 1
        return await self._call(request, self.calls)


def keyword_query(query: str) -> str:
    """An OR ``to_tsquery`` text of the query's words (sanitised: letters and digits only)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:32]
    return " | ".join(words)


def rrf(rankings: dict[str, list[Hit]], k: int = RRF_K) -> list[Result]:
    """Fuse ranked lists (best first) by reciprocal rank fusion; ties keep first-seen order."""
    fused: dict[int, Result] = {}
    for name, hits in rankings.items():
        for rank, hit in enumerate(hits, start=1):
            result = fused.setdefault(hit.chunk_id, Result(hit=hit, score=0.0))
            result.score += 1.0 / (k + rank)
            result.ranks[name] = rank
            if name == "vector":
                result.vector_score = hit.score
            elif name == "keyword":
                result.keyword_score = hit.score
    return sorted(fused.values(), key=lambda r: r.score, reverse=True)


def mmr(
    results: list[Result],
    vectors: dict[int, list[float]],
    query: list[float],
    top_k: int,
    lambda_: float = 0.5,
) -> list[Result]:
    """Maximal marginal relevance over ``results`` (cosine on normalised vectors)."""
    pool = [r for r in results if r.hit.chunk_id in vectors]
    if not pool:
        return results[:top_k]
    matrix = np.asarray([vectors[r.hit.chunk_id] for r in pool], dtype=np.float32)
    relevance = matrix @ np.asarray(query, dtype=np.float32)
    picked: list[int] = []
    while len(picked) < min(top_k, len(pool)):
        best, best_value = -1, -np.inf
        for i in range(len(pool)):
            if i in picked:
                continue
            redundancy = max((float(matrix[i] @ matrix[j]) for j in picked), default=0.0)
            value = lambda_ * float(relevance[i]) - (1 - lambda_) * redundancy
            if value > best_value:
                best, best_value = i, value
        picked.append(best)
    return [pool[i] for i in picked]


def local_rerank(
    results: list[Result],
    vectors: dict[int, list[float]],
    query: list[float],
    alpha: float = LOCAL_RERANK_ALPHA,
) -> list[Result]:
    """Re-score ``results`` by cosine to the query blended with the normalised keyword score.

    Each result's ``score`` becomes the blended score (see the module docstring); ties keep the
    fused order."""
    q = np.asarray(query, dtype=np.float32)
    best_kw = max((r.keyword_score or 0.0 for r in results), default=0.0)
    scored: list[tuple[float, int, Result]] = []
    for i, r in enumerate(results):
        vec = vectors.get(r.hit.chunk_id)
        cosine = float(np.asarray(vec, dtype=np.float32) @ q) if vec is not None else 0.0
        kw = (r.keyword_score or 0.0) / best_kw if best_kw > 0 else 0.0
        scored.append((alpha * cosine + (1 - alpha) * kw, i, r))
    scored.sort(key=lambda t: (-t[0], t[1]))
    out: list[Result] = []
    for value, _, r in scored:
        r.score = value
        out.append(r)
    return out


async def search(
    repo: RagRepository,
    embedder: Embedder,
    *,
    tenant_id: str,
    kb_id: uuid.UUID,
    query: str,
    top_k: int = 5,
    mode: SearchMode = SearchMode.hybrid,
    filters: dict[str, Any] | None = None,
    use_mmr: bool = False,
    candidates: int | None = None,
    rerank: Rerank = Rerank.none,
    pending_embedder: Embedder | None = None,
) -> list[Result]:
    """The ``top_k`` best chunks of the tenant's knowledge base for ``query``.

    ``embedder`` is the knowledge base's current model; ``pending_embedder`` the model it is
    switching to (chunks already re-embedded are found through it)."""
    pool = candidates or max(4 * top_k, 20)
    rankings: dict[str, list[Hit]] = {}
    query_vector: list[float] | None = None
    if mode in (SearchMode.hybrid, SearchMode.vector) or use_mmr or rerank is Rerank.local:
        query_vector = (await embedder.embed([query]))[0]
    if mode in (SearchMode.hybrid, SearchMode.vector):
        assert query_vector is not None
        hits = await repo.vector_search(tenant_id, kb_id, query_vector, pool, filters, model=embedder.model)
        if pending_embedder is not None and pending_embedder.model != embedder.model:
            pending_vector = (await pending_embedder.embed([query]))[0]
            hits += await repo.vector_search(
                tenant_id, kb_id, pending_vector, pool, filters, model=pending_embedder.model
            )
            hits = sorted(hits, key=lambda h: h.score, reverse=True)[:pool]
        rankings["vector"] = hits
    if mode in (SearchMode.hybrid, SearchMode.keyword):
        rankings["keyword"] = await repo.keyword_search(tenant_id, kb_id, keyword_query(query), pool, filters)
    fused = rrf(rankings)
    if query_vector is not None and (use_mmr or rerank is Rerank.local):
        vectors = await repo.embeddings_of(tenant_id, [r.hit.chunk_id for r in fused], model=embedder.model)
        if rerank is Rerank.local:
            fused = local_rerank(fused, vectors, query_vector)
        if use_mmr:
            return mmr(fused, vectors, query_vector, top_k)
    return fused[:top_k]
