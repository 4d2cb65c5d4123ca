"""RRF and MMR arithmetic, keyword query sanitising, and the local embedder's geometry."""

from __future__ import annotations

import numpy as np
import pytest

from core.rag.embed import shared_local_embedder
from core.rag.search import Result, keyword_query, mmr, rrf
from core.rag.store import Hit


def hit(chunk_id: int, score: float = 0.0) -> Hit:
    return Hit(chunk_id, "d", "t", chunk_id, f"c{chunk_id}", None, None, {}, score)


def test_rrf_scores_are_sums_of_reciprocal_ranks() -> None:
    fused = rrf({"vector": [hit(1, 0.9), hit(2, 0.8)], "keyword": [hit(2, 3.0), hit(3, 1.0)]}, k=60)
    scores = {r.hit.chunk_id: r.score for r in fused}
    assert scores[2] == pytest.approx(1 / 62 + 1 / 61)
    assert scores[1] == pytest.approx(1 / 61)
    assert scores[3] == pytest.approx(1 / 62)
    assert [r.hit.chunk_id for r in fused] == [2, 1, 3]
    assert fused[0].ranks == {"vector": 2, "keyword": 1}
    assert fused[0].vector_score == 0.8
    assert fused[0].keyword_score == 3.0


def test_mmr_prefers_a_diverse_second_pick() -> None:
    a, a_twin, b = [1.0, 0.0], [0.999, 0.045], [0.6, 0.8]
    results = [Result(hit(i), 1.0) for i in (1, 2, 3)]
    picked = mmr(results, {1: a, 2: a_twin, 3: b}, [1.0, 0.0], top_k=2, lambda_=0.3)
    assert [r.hit.chunk_id for r in picked] == [1, 3]


def test_keyword_query_is_an_or_of_plain_words() -> None:
    assert keyword_query("Reset my 'password' & VPN!") == "reset | my | password | vpn"
    assert keyword_query("&|!():*") == ""


def test_local_embedder_paraphrases_close_unrelated_far() -> None:
    vectors = shared_local_embedder().embed_sync(
        [
            "How do I reset my password?",
            "What are the steps to change my account password?",
            "The annual rainfall in the Sahara desert is very low.",
        ]
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    paraphrase, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert paraphrase > 0.6
    assert unrelated < 0.2
    assert shared_local_embedder() is shared_local_embedder()
