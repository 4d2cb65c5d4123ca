"""Corpora for the knowledge-base benchmark: real embedded text and synthetic vector models.

* :func:`real_passages` — English passages from the docstrings of the installed Python standard
  library and site-packages (deterministic for a given environment), cut into windows of at
  most 60 words; held-out passages give the queries (their first sentence, ≤ 20 words).
* :func:`embed_cached` — local MiniLM vectors of those texts, cached under ``bench/.work/``
  (keyed by the texts' hash), since embedding 10k passages takes minutes on 2 cores.
* :class:`CalibratedVectors` — a mixture model fitted to real embeddings (spherical k-means
  clusters, each sampled from its own empirical covariance), with one spread factor bisected so
  the median 10-NN cosine of a synthetic sample matches the real sample of the same size. Used
  where embedding real text is too slow (100k chunks ≈ 80+ minutes here).
* :class:`IsotropicClusters` (the previous benchmark's vectors: isotropic noise around random
  centres) and :func:`uniform_vectors` (uniform on the sphere): hard, structure-less baselines.
* :func:`nn_profile` — quantiles of the 1-NN and 10-NN cosine similarity of queries to a corpus
  (exact, numpy), to compare the distributions.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from core.db.rag_models import EMBEDDING_DIMS

Matrix = npt.NDArray[np.float32]
CACHE_DIR = Path(__file__).resolve().parent / ".work" / "knowledge"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _normalise(m: npt.NDArray[np.floating]) -> Matrix:
    out: Matrix = (m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out


# --- real text ----------------------------------------------------------------------------------


def _docstring_windows(roots: list[Path], words: int = 60) -> list[str]:
    found: set[str] = set()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(errors="ignore"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for para in re.split(r"\n\s*\n", doc):
                    tokens = para.split()
                    for i in range(0, len(tokens), words):
                        window = tokens[i : i + words]
                        joined = "".join(window)
                        # Prose, not tables or code: at least 15 words, mostly letters.
                        if len(window) >= 15 and sum(c.isalpha() for c in joined) > 0.7 * len(joined):
                            found.add(" ".join(window))
    return sorted(found)


def real_passages(n_corpus: int, n_queries: int, seed: int) -> tuple[list[str], list[str]]:
    """``n_corpus`` passages and ``n_queries`` queries (first sentences of other passages)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = Path(sysconfig.get_paths()["purelib"])
    cache = CACHE_DIR / f"passages-{sys.version_info.major}{sys.version_info.minor}.txt"
    if cache.exists():
        pool = cache.read_text().split("\n")
    else:
        pool = _docstring_windows([stdlib, site])
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text("\n".join(pool))
    if len(pool) < n_corpus + n_queries:
        raise SystemExit(f"only {len(pool)} passages available for {n_corpus} + {n_queries}")
    rng = random.Random(seed)
    picked = rng.sample(pool, n_corpus + n_queries)
    queries = [" ".join(_SENTENCE.split(p)[0].split()[:20]) for p in picked[n_corpus:]]
    return picked[:n_corpus], queries


def embed_cached(texts: list[str], threads: int = 2, label: str = "texts") -> tuple[Matrix, float]:
    """Local MiniLM vectors of ``texts`` (cached); (vectors, seconds spent embedding now, 0 if cached)."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"minilm-{label}-{len(texts)}-{digest}.npy"
    if path.exists():
        cached: Matrix = np.load(path)
        return cached, 0.0
    from core.rag.embed import LocalEmbedder

    embedder = LocalEmbedder(threads=threads)
    # Length-sorted batches waste less padding; the order is restored afterwards.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), EMBEDDING_DIMS), dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, len(order), 64):
        idx = order[start : start + 64]
        out[idx] = embedder.embed_sync([texts[i] for i in idx])
        if start % 1024 == 0:
            rate = (start + len(idx)) / (time.perf_counter() - started)
            print(f"    embedded {start + len(idx):>6}/{len(texts)} {label} ({rate:.0f}/s)", flush=True)
    spent = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out, spent


# --- synthetic models ---------------------------------------------------------------------------


def uniform_vectors(n: int, rng: np.random.Generator) -> Matrix:
    """Uniform on the unit sphere: no structure at all (the hardest case for any ANN index)."""
    return _normalise(rng.standard_normal((n, EMBEDDING_DIMS)))


class IsotropicClusters:
    """The previous benchmark's vectors: isotropic noise around 200 random centres sharing a
    common component (spread 0.03–0.07 per dimension, Dirichlet cluster weights)."""

    def __init__(self, seed: int, clusters: int = 200) -> None:
        self.rng = np.random.default_rng(seed)
        centres = self.rng.standard_normal((clusters, EMBEDDING_DIMS)).astype(np.float32)
        centres += 1.5 * self.rng.standard_normal(EMBEDDING_DIMS).astype(np.float32)
        self.centres = _normalise(centres)
        self.spread = self.rng.uniform(0.03, 0.07, clusters).astype(np.float32)
        self.weights = self.rng.dirichlet(np.full(clusters, 2.0))

    def sample(self, n: int) -> Matrix:
        which = self.rng.choice(len(self.centres), size=n, p=self.weights)
        noise = self.rng.standard_normal((n, EMBEDDING_DIMS)).astype(np.float32)
        return _normalise(self.centres[which] + noise * self.spread[which, None])


def _kmeans(x: Matrix, k: int, rng: np.random.Generator, iterations: int = 15) -> npt.NDArray[np.int64]:
    centres = x[rng.choice(len(x), size=k, replace=False)]
    labels = np.zeros(len(x), dtype=np.int64)
    for _ in range(iterations):
        labels = np.argmax(x @ centres.T, axis=1)
        for c in range(k):
            members = x[labels == c]
            centres[c] = members.mean(axis=0) if len(members) else x[rng.integers(len(x))]
        centres = _normalise(centres)
    return labels


class CalibratedVectors:
    """A mixture fitted to real embeddings: ``k`` spherical k-means clusters; a point of cluster
    ``c`` is ``μ_c + s · R_cᵀ w`` (``R_c`` the members' residuals from ``μ_c``, ``w ~ N(0, I/n_c)``,
    i.e. a Gaussian with the cluster's empirical covariance), normalised. ``s`` is bisected so
    the median 10-NN cosine of a sample as large as the real set matches the real one's."""

    def __init__(self, real: Matrix, queries: Matrix, seed: int, k: int = 64) -> None:
        self.rng = np.random.default_rng(seed)
        labels = _kmeans(real, k, self.rng)
        self.clusters = [real[labels == c] for c in range(k) if (labels == c).sum() >= 2]
        self.means = [m.mean(axis=0) for m in self.clusters]
        self.residuals = [m - mu for m, mu in zip(self.clusters, self.means, strict=True)]
        sizes = np.asarray([len(m) for m in self.clusters], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.scale = 1.0
        target = float(np.median(nn_similarities(real, queries, 10)[:, -1]))
        lo, hi = 0.3, 3.0
        for _ in range(8):
            self.scale = (lo + hi) / 2
            probe = self.sample(len(real), np.random.default_rng(seed + 1))
            got = float(np.median(nn_similarities(probe, queries, 10)[:, -1]))
            lo, hi = (self.scale, hi) if got > target else (lo, self.scale)
        self.target_nn10 = target

    def sample(self, n: int, rng: np.random.Generator | None = None) -> Matrix:
        rng = rng or self.rng
        which = rng.choice(len(self.clusters), size=n, p=self.weights)
        out = np.empty((n, EMBEDDING_DIMS), dtype=np.float32)
        for c in np.unique(which):
            rows = np.flatnonzero(which == c)
            res = self.residuals[c]
            w = rng.standard_normal((len(rows), len(res))).astype(np.float32) / np.sqrt(len(res))
            out[rows] = self.means[c] + self.scale * (w @ res)
        return _normalise(out)


# --- nearest-neighbour profile ------------------------------------------------------------------


def nn_similarities(corpus: Matrix, queries: Matrix, k: int) -> npt.NDArray[np.float32]:
    """Cosine similarities of each query's ``k`` nearest corpus vectors, best first (exact)."""
    out = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), 256):
        sims = queries[start : start + 256] @ corpus.T
        top = np.partition(sims, -k, axis=1)[:, -k:]
        out[start : start + 256] = -np.sort(-top, axis=1)
    return out


def nn_profile(corpus: Matrix, queries: Matrix) -> dict[str, float]:
    """p10/p50/p90 of the 1-NN and 10-NN cosine, and the median gap between the 10th and 11th."""
    sims = nn_similarities(corpus, queries, 11)
    return {
        "nn1_p10": float(np.percentile(sims[:, 0], 10)),
        "nn1_p50": float(np.median(sims[:, 0])),
        "nn1_p90": float(np.percentile(sims[:, 0], 90)),
        "nn10_p50": float(np.median(sims[:, 9])),
        "gap10_p50": float(np.median(sims[:, 9] - sims[:, 10])),
    }
