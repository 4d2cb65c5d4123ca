"""Semantic agreement for open answers: cluster candidate embeddings, answer with a medoid.

Clustering is complete-linkage agglomerative at a cosine ``threshold``: two clusters merge only
if *every* pair across them is at least ``threshold`` similar, so a cluster is a set of answers
that all agree with each other (single linkage would chain A~B~C even when A and C disagree).
Merges take the most similar pair first; equal similarities merge the lowest indices first, so
the result does not depend on anything but the input order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from core.consensus.stats import smoothed_share, vote_weights
from core.consensus.types import CandidateAnswer, ConsensusOutcome
from core.consensus.vote import TIE_EPSILON, Ballot, empty_outcome, split_candidates

LABEL_PREVIEW_CHARS = 60


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is the zero vector)."""
    if len(a) != len(b):
        raise ValueError(f"embedding dimensions differ: {len(a)} != {len(b)}")
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm > 0 else 0.0


def similarity_matrix(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    """Pairwise cosine similarities (the diagonal is 1)."""
    n = len(vectors)
    sim = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            sim[i][j] = sim[j][i] = cosine(vectors[i], vectors[j])
    return sim


def complete_linkage_clusters(sim: Sequence[Sequence[float]], threshold: float) -> list[list[int]]:
    """Clusters (lists of indices, each sorted) of a similarity matrix, in order of first member."""
    clusters = [[i] for i in range(len(sim))]
    while True:
        best: tuple[float, int, int] | None = None
        for x in range(len(clusters)):
            for y in range(x + 1, len(clusters)):
                link = min(sim[i][j] for i in clusters[x] for j in clusters[y])
                if link >= threshold and (best is None or link > best[0] + TIE_EPSILON):
                    best = (link, x, y)
        if best is None:
            return sorted((sorted(c) for c in clusters), key=lambda c: c[0])
        _, x, y = best
        clusters[x] = clusters[x] + clusters[y]
        del clusters[y]


def medoid(members: Sequence[int], sim: Sequence[Sequence[float]]) -> int:
    """The member most similar to the others in total (the earliest on a tie)."""
    return max(members, key=lambda i: (sum(sim[i][j] for j in members), -i))


def _ballot_vectors(
    cands: Sequence[CandidateAnswer], ballots: Sequence[Ballot], embeddings: Sequence[Sequence[float]]
) -> list[Sequence[float]]:
    """The vector of each ballot, whichever nested subset of candidates ``embeddings`` covers.

    The subsets are nested (all ⊇ ok ⊇ ok with text ⊇ ballots), so equal sizes mean equal sets
    and matching by length is unambiguous.
    """
    subsets = [
        list(range(len(cands))),
        [i for i, c in enumerate(cands) if c.ok],
        [i for i, c in enumerate(cands) if c.ok and c.text],
        [b.index for b in ballots],
    ]
    for subset in subsets:
        if len(embeddings) == len(subset):
            position = {index: k for k, index in enumerate(subset)}
            return [embeddings[position[b.index]] for b in ballots]
    raise ValueError(
        f"expected one embedding per candidate ({len(cands)}) or per ok candidate ({len(subsets[1])}),"
        f" got {len(embeddings)}"
    )


def semantic_consensus(
    cands: Sequence[CandidateAnswer],
    embeddings: Sequence[Sequence[float]],
    threshold: float = 0.85,
    *,
    weights: Mapping[str, float] | None = None,
) -> ConsensusOutcome:
    """Cluster candidates by embedding similarity and answer with the largest cluster's medoid.

    ``embeddings`` holds one vector per candidate (entries of failed candidates are ignored and
    may be empty), or one per ``ok`` candidate, per ``ok`` candidate with a non-empty text, or per
    valid candidate, in order. The largest cluster is the one with the
    most (reliability-weighted, as in :func:`majority_vote`) support; ties go to more members,
    then to the earliest candidate, and divide the confidence by the number of tied clusters.
    Confidence is the cluster's smoothed weight share ``(n*s + 1) / (n + 2)``.
    Votes are keyed ``"c1: <preview of the medoid>"``, ``"c2: ..."`` in rank order.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError("threshold must be within [0, 1]")
    ballots, failed = split_candidates(cands)
    if not ballots:
        return empty_outcome("semantic", failed, "no valid candidate answers")
    sim = similarity_matrix(_ballot_vectors(cands, ballots, embeddings))
    per_ballot = vote_weights([b.model for b in ballots], weights)
    clusters = complete_linkage_clusters(sim, threshold)
    scored = sorted(
        ((sum(per_ballot[i] for i in c), c) for c in clusters),
        key=lambda wc: (-round(wc[0], 9), -len(wc[1]), wc[1][0]),
    )
    top_weight, top = scored[0]
    ties = sum(1 for w, _ in scored if abs(w - top_weight) <= TIE_EPSILON * max(1.0, top_weight))
    total = sum(w for w, _ in scored)
    votes: dict[str, list[str]] = {}
    for rank, (_, members) in enumerate(scored, start=1):
        preview = " ".join(ballots[medoid(members, sim)].text.split())[:LABEL_PREVIEW_CHARS]
        votes[f"c{rank}: {preview}"] = [ballots[i].model for i in members]
    winners = set(top)
    return ConsensusOutcome(
        strategy="semantic",
        answer=ballots[medoid(top, sim)].text,
        confidence=smoothed_share(top_weight / total, len(ballots)) / ties,
        winner_models=[ballots[i].model for i in top],
        votes=votes,
        dissent=[b.model for i, b in enumerate(ballots) if i not in winners],
        failed=failed,
        reasons=f"tie among {ties} clusters" if ties > 1 else None,
        needs_more=ties > 1,
    )
