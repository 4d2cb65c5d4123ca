"""Retrieval quality on a small committed corpus: recall@5 of hybrid vs. vector-only vs. keyword-only.

The corpus (``tests/fixtures/rag/corpus/``, 15 short documents) is ingested through the API by the
module's real worker (local MiniLM embedder); ``questions.json`` names the relevant document(s) of
each question: keyword-heavy questions, paraphrases with little word overlap, rare terms / IDs
(``NX-5002``, ``SQ-2291``) and questions with two relevant documents. recall@5 of a question is the
share of its relevant documents among the documents of the top 5 hits; a mode's figure is the mean.

Measured (local MiniLM int8, RRF k=60): vector 0.967, keyword 0.867, hybrid 1.000; the asserts
allow a small tolerance (``TOLERANCE``) below those figures.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx

from tests.api.test_knowledge_bases_api import api_worker, make_kb, search, upload_text, wait_ready
from tests.conftest import FIXTURES

__all__ = ["api_worker"]

MakeKey = Callable[..., Awaitable[str]]
CORPUS = FIXTURES / "rag" / "corpus"
QUESTIONS = json.loads((FIXTURES / "rag" / "questions.json").read_text())
MODES = ("vector", "keyword", "hybrid")
TOP_K = 5
# Measured on 15 questions: vector misses q15 (half), keyword misses q05 and q07 (paraphrases).
MEASURED = {"vector": 29 / 30, "keyword": 13 / 15, "hybrid": 1.0}
TOLERANCE = 0.05


async def test_hybrid_recall_at_5_beats_each_retriever(
    client: httpx.AsyncClient, api_worker: None, make_key: MakeKey, tenant_id: str
) -> None:
    key = await make_key(tenant_id)
    kb = await make_kb(client, key, "quality")
    files = sorted(p for p in CORPUS.iterdir() if p.suffix in (".md", ".txt"))
    assert len(files) >= 15
    uploaded = [
        await upload_text(
            client,
            key,
            kb,
            p.stem,
            p.read_text(),
        )
        for p in files
    ]
    ready = await asyncio.gather(*(wait_ready(client, key, kb, d["id"]) for d in uploaded))
    assert [d["status"] for d in ready] == ["ready"] * len(files)
    name_of = {d["id"]: p.stem for d, p in zip(uploaded, files, strict=True)}
    assert {r for q in QUESTIONS for r in q["relevant"]} <= set(name_of.values())

    recall: dict[str, float] = {}
    misses: dict[str, list[str]] = {}
    for mode in MODES:
        total = 0.0
        for q in QUESTIONS:
            hits = await search(client, key, kb, q["question"], mode=mode, top_k=TOP_K)
            found = {name_of[h["document_id"]] for h in hits[:TOP_K]}
            relevant = set(q["relevant"])
            total += len(relevant & found) / len(relevant)
            if not relevant <= found:
                misses.setdefault(mode, []).append(q["id"])
        recall[mode] = total / len(QUESTIONS)
    print(f"\nrecall@{TOP_K}: " + ", ".join(f"{m}={recall[m]:.3f}" for m in MODES), f"misses={misses}")  # noqa: T201  # noqa: T201

    assert recall["hybrid"] >= recall["vector"], recall
    assert recall["hybrid"] >= recall["keyword"], recall
    for mode in MODES:
        assert recall[mode] >= MEASURED[mode] - TOLERANCE, (mode, recall, misses)
