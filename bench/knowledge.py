"""Knowledge-base benchmark: ingest throughput, vector query latency and HNSW recall@10.

One run, on a throwaway embedded Postgres (own temp dir, free port, migrated to head):

1. Ingest: ``--chunks`` real text chunks (generated English sentences cut by the production
   chunker at 200 tokens) embedded with the local MiniLM (int8 ONNX, 2 threads) in batches of
   the production ``embed_batch`` (32), then stored the way the ingestion activities store them
   (``insert_chunks`` then ``set_embeddings``, one transaction per batch). Embedding and storing
   are timed separately. Single-query embedding latency is reported here too, since the query
   latency of step 2 excludes it.
2. Query, per corpus (``bench/knowledge_corpus.py``) and size: the vectors bulk-loaded (binary
   COPY) into one knowledge base of 100 ready documents (metadata ``group`` g0–g9, ``doc``
   d0–d99), ``ANALYZE``d; then per HNSW build (``m``, ``ef_construction``; build time measured)
   and per ``hnsw.iterative_scan`` mode, filter (none / 10% / 1% of the documents) and
   ``hnsw.ef_search``: p50/p95 of :meth:`RagRepository.vector_search` (the production vector
   path, tenant + knowledge-base + ready-document filter included) over 200 queries, and
   recall@10 against the same call with ``enable_indexscan = off`` (exact: sequential scan +
   sort, same filters, same run). Corpora: ``real`` (10k docstring passages embedded with the
   local MiniLM, held-out real queries), ``calibrated`` (a mixture fitted to the real vectors,
   for sizes beyond what can be embedded here), ``isotropic`` (the previous synthetic vectors)
   and ``uniform`` (uniform on the sphere).

    python -m bench.knowledge [--chunks 2000] [--sizes 10000,100000] [--corpora real,calibrated,...]
        [--builds 16:64,24:128] [--ef-sweep 40,100,200] [--scans strict_order,relaxed_order]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.knowledge_corpus import (
    CalibratedVectors,
    IsotropicClusters,
    Matrix,
    embed_cached,
    nn_profile,
    real_passages,
    uniform_vectors,
)
from cli.embedded import ensure_database, free_port, postgres_spec, start_server, stop_process
from core.db.migrate import upgrade
from core.db.rag_models import HNSW_EF_CONSTRUCTION, HNSW_M
from core.rag.chunk import chunk_text, embedding_text
from core.rag.settings import LOCAL_MODEL, RagSettings
from core.rag.store import HNSW_EF_SEARCH, HNSW_ITERATIVE_SCAN, RagRepository

TARGET_RECALL = 0.95
TARGET_P95_MS = 30.0
TENANT = "bench"
PROD_EF_SEARCH = HNSW_EF_SEARCH  # what the repository sets (pgvector's own default is 40)
PROD_BUILD = (HNSW_M, HNSW_EF_CONSTRUCTION)  # what migration 0009 builds
SEED = 20240601


# --- embedded Postgres ------------------------------------------------------------------------


@contextmanager
def embedded_postgres() -> Iterator[int]:
    """A migrated Postgres on a free port in its own temp dir; stopped and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="nexus-bench-kb-"))
    proc = None
    try:
        spec = postgres_spec(root / "pg", free_port(), root / "pg.log")
        proc = start_server(spec, timeout_s=60)
        ensure_database(spec.port)
        upgrade(f"postgresql+asyncpg://postgres@127.0.0.1:{spec.port}/nexus")
        yield spec.port
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# --- fixtures in the database -----------------------------------------------------------------


async def make_kb(conn: Any, name: str, documents: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A knowledge base with ``documents`` ready documents (metadata ``group`` = g{i % 10},
    ``doc`` = d{i}) on an asyncpg connection."""
    kb_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO tenants (id, name, is_platform, settings) VALUES ($1, $1, false, '{}')"
        " ON CONFLICT DO NOTHING",
        TENANT,
    )
    await conn.execute(
        "INSERT INTO knowledge_bases (id, tenant_id, name, description, embedding_model, chunk_tokens,"
        " chunk_overlap, created_by) VALUES ($1, $2, $3, '', $4, 200, 30, 'bench')",
        kb_id,
        TENANT,
        name,
        LOCAL_MODEL,
    )
    docs = [uuid.uuid4() for _ in range(documents)]
    for i, doc in enumerate(docs):
        await conn.execute(
            "INSERT INTO kb_documents (id, tenant_id, kb_id, title, content_type, sha256, size, status,"
            " source_payload_id, workflow_id, chunk_count, metadata, created_by)"
            " VALUES ($1, $2, $3, $4, 'text/plain', $5, 0, 'ready', $6, 'bench', 0, $7::jsonb, 'bench')",
            doc,
            TENANT,
            kb_id,
            f"doc {i}",
            hashlib.sha256(doc.bytes).hexdigest(),
            uuid.uuid4(),
            json.dumps({"group": f"g{i % 10}", "doc": f"d{i}"}),
        )
    return kb_id, docs


# --- (1) ingest ---------------------------------------------------------------------------------

_WORDS = (
    "the a system model query index vector database latency throughput tenant document search "
    "retrieval answer policy cluster network storage memory cache request response service user "
    "report quarter revenue contract clause invoice payment customer support ticket release "
    "feature deployment incident review security access audit schedule meeting budget forecast "
    "team project plan risk metric goal product market price order shipment warehouse supplier"
).split()
_VERBS = "describes improves reduces stores returns updates requires includes tracks measures".split()


def generated_text(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 22))]
        words.insert(rng.randint(1, len(words) - 1), rng.choice(_VERBS))
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


async def bench_ingest(port: int, n_chunks: int, threads: int) -> dict[str, float]:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from core.rag.embed import LocalEmbedder

    rng = random.Random(SEED)
    chunks = []
    while len(chunks) < n_chunks:
        chunks.extend(chunk_text(generated_text(rng, 400), chunk_tokens=200, overlap=30))
    chunks = chunks[:n_chunks]
    for i, c in enumerate(chunks):
        c.index = i
    texts = [embedding_text(c.text, c.metadata) for c in chunks]
    batch = RagSettings().embed_batch

    load_start = time.perf_counter()
    embedder = LocalEmbedder(threads=threads)
    load_s = time.perf_counter() - load_start
    embedder.embed_sync(texts[:batch])  # warm-up (first run allocates)

    started = time.perf_counter()
    vectors = np.concatenate([embedder.embed_sync(texts[i : i + batch]) for i in range(0, len(texts), batch)])
    embed_s = time.perf_counter() - started

    queries = [generated_text(rng, 1) for _ in range(200)]
    q_ms = []
    for q in queries:
        t0 = time.perf_counter()
        embedder.embed_sync([q])
        q_ms.append((time.perf_counter() - t0) * 1000)

    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/nexus")
    try:
        kb_id, (doc_id,) = await make_kb(conn, "ingest", 1)
    finally:
        await conn.close()

    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nexus")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        started = time.perf_counter()
        async with sessions() as session, session.begin():
            await RagRepository(session).insert_chunks(TENANT, kb_id, str(doc_id), chunks)
        insert_s = time.perf_counter() - started
        started = time.perf_counter()
        for first in range(0, n_chunks, batch):
            async with sessions() as session, session.begin():
                repo = RagRepository(session)
                pending = await repo.chunks_to_embed(TENANT, str(doc_id), first, first + batch)
                await repo.set_embeddings(
                    TENANT, LOCAL_MODEL, {c.id: vectors[c.chunk_index].tolist() for c in pending}
                )
        vectors_s = time.perf_counter() - started
        async with sessions() as session:
            total, embedded = await RagRepository(session).chunk_counts(TENANT, str(doc_id))
        assert total == embedded == n_chunks, (total, embedded)
        async with sessions() as session, session.begin():
            await RagRepository(session).delete_chunks(TENANT, str(doc_id))
    finally:
        await engine.dispose()

    tokens = [len(e.ids) for e in embedder._tokenizer.encode_batch(texts[:200])]
    return {
        "chunks": n_chunks,
        "tokens_mean": statistics.mean(tokens),
        "model_load_s": load_s,
        "embed_s": embed_s,
        "embed_cps": n_chunks / embed_s,
        "insert_s": insert_s,
        "set_vectors_s": vectors_s,
        "store_s": insert_s + vectors_s,
        "store_cps": n_chunks / (insert_s + vectors_s),
        "query_embed_p50_ms": pct(q_ms, 50),
        "query_embed_p95_ms": pct(q_ms, 95),
    }


# --- (2) query latency and recall ---------------------------------------------------------------

FILTERS: dict[str, dict[str, str] | None] = {
    "none": None,  # tenant + knowledge base + ready-document filter only (all rows pass)
    "10%": {"group": "g0"},  # document metadata matching 10 of the 100 documents
    "1%": {"doc": "d0"},  # one document of 100
}


@dataclass
class Corpus:
    """Vectors of one corpus at one size, and its query vectors."""

    name: str
    vectors: Matrix
    queries: Matrix


async def load_vectors(conn: Any, kb_id: uuid.UUID, docs: list[uuid.UUID], vectors: Matrix) -> float:
    """Binary COPY of ``vectors`` into kb_chunks (row ``i`` → document ``i % len(docs)``); seconds."""
    started = time.perf_counter()
    records = (
        (TENANT, kb_id, docs[i % len(docs)], i // len(docs), f"chunk {i}", 3, "{}", vec, LOCAL_MODEL)
        for i, vec in enumerate(vectors)
    )
    await conn.copy_records_to_table(
        "kb_chunks",
        records=records,
        columns=[
            "tenant_id",
            "kb_id",
            "document_id",
            "chunk_index",
            "text",
            "token_count",
            "metadata",
            "embedding",
            "embedding_model",
        ],
    )
    return time.perf_counter() - started


async def timed_queries(
    sessions: Any,
    kb_id: uuid.UUID,
    queries: Matrix,
    *,
    ef_search: int = PROD_EF_SEARCH,
    scan: str = HNSW_ITERATIVE_SCAN,
    exact: bool = False,
    filters: dict[str, str] | None = None,
) -> tuple[list[float], list[list[int]]]:
    """Run every query through ``vector_search``; (latencies ms, top-10 chunk ids)."""
    from sqlalchemy import text

    latencies: list[float] = []
    ids: list[list[int]] = []
    for q in queries:
        vec = q.tolist()
        async with sessions() as session, session.begin():
            if exact:
                await session.execute(text("SET LOCAL enable_indexscan = off"))
            t0 = time.perf_counter()
            hits = await RagRepository(session).vector_search(
                TENANT, kb_id, vec, 10, filters, ef_search=ef_search, iterative_scan=scan
            )
            latencies.append((time.perf_counter() - t0) * 1000)
        ids.append([h.chunk_id for h in hits])
    return latencies, ids


async def plan_of(
    sessions: Any, kb_id: uuid.UUID, query: list[float], exact: bool, filters: dict[str, str] | None = None
) -> str:
    """EXPLAIN of the repository's vector query (checks the index is or is not used)."""
    from sqlalchemy import literal_column, text
    from sqlalchemy.dialects import postgresql

    from core.db.rag_models import KbChunk, KbDocument

    async with sessions() as session, session.begin():
        repo = RagRepository(session)
        distance = KbChunk.embedding.cosine_distance(query)
        stmt = (
            repo._searchable(TENANT, kb_id, None)
            .add_columns((1 - distance).label("score"))
            .where(KbChunk.embedding.is_not(None))
            .order_by(distance)
            .limit(10)
        )
        if filters:  # the repository's containment filter, as a literal (bench constants only)
            stmt = stmt.where(
                KbDocument.metadata_.op("@>")(literal_column(f"'{json.dumps(filters)}'::jsonb"))
            )
        if exact:
            await session.execute(text("SET LOCAL enable_indexscan = off"))
        sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        rows = await session.execute(text("EXPLAIN " + sql))
        return "\n".join(r[0] for r in rows)


def recall_at_10(ann: list[list[int]], exact: list[list[int]]) -> float:
    """Mean |ANN top-10 ∩ exact top-10| / |exact top-10| (exact has 10 rows unless fewer match)."""
    return statistics.mean(len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(ann, exact, strict=True))


def make_corpora(size: int, names: list[str], n_queries: int, threads: int) -> list[Corpus]:
    """The corpora of one size; ``real`` only up to the embedded real passages available."""
    out: list[Corpus] = []
    real, real_q = real_vectors(n_queries, threads) if {"real", "calibrated"} & set(names) else (None, None)
    for name in names:
        if name == "real" and real is not None and real_q is not None and size <= len(real):
            out.append(Corpus("real", real[:size], real_q))
        elif name == "calibrated" and real is not None and real_q is not None:
            model = CalibratedVectors(real, real_q, SEED)
            out.append(Corpus("calibrated", model.sample(size), real_q))
        elif name == "isotropic":
            iso = IsotropicClusters(SEED)
            out.append(Corpus("isotropic", iso.sample(size), iso.sample(n_queries)))
        elif name == "uniform":
            rng = np.random.default_rng(SEED)
            out.append(Corpus("uniform", uniform_vectors(size, rng), uniform_vectors(n_queries, rng)))
    return out


REAL_MAX = 10_000  # real passages embedded (≈ 20 passages/s here: 100k would take 80+ minutes)
REAL_QUERIES = 300


def real_vectors(n_queries: int, threads: int) -> tuple[Matrix, Matrix]:
    """The embedded real passages (cached) and the embedded held-out queries."""
    # Always the same draw (so the embeddings cache hits), sliced to what is asked.
    corpus, queries = real_passages(REAL_MAX, REAL_QUERIES, SEED)
    q, q_s = embed_cached(queries, threads, "queries")
    c, c_s = embed_cached(corpus, threads, "corpus")
    if q_s or c_s:
        print(f"  embedded {len(corpus)} passages + {len(queries)} queries in {q_s + c_s:.0f} s")
    return c, q[:n_queries]


async def bench_corpus(
    conn: Any,
    sessions: Any,
    corpus: Corpus,
    builds: list[tuple[int, int]],
    ef_sweep: list[int],
    scans: list[str],
) -> list[dict[str, Any]]:
    """Load one corpus into a fresh knowledge base; per index build, sweep ef_search, filters and
    iterative-scan modes against exact search of the same rows with the same filters."""
    await conn.execute("TRUNCATE kb_chunks, kb_documents CASCADE")
    await conn.execute("DROP INDEX IF EXISTS ix_kb_chunks_embedding_hnsw")
    kb_id, docs = await make_kb(conn, f"{corpus.name}-{len(corpus.vectors)}", 100)
    copy_s = await load_vectors(conn, kb_id, docs, corpus.vectors)
    await conn.execute("VACUUM ANALYZE kb_chunks")
    await conn.execute("ANALYZE kb_documents")
    size = len(corpus.vectors)
    queries = corpus.queries[:N_TIMED]
    warmup = corpus.queries[N_TIMED : N_TIMED + 20]
    exact: dict[str, tuple[list[float], list[list[int]]]] = {}
    for label, flt in FILTERS.items():
        exact[label] = await timed_queries(sessions, kb_id, queries, exact=True, filters=flt)
    # The exact SQL agrees with numpy brute force (chunk ids follow the load order).
    first_id = await conn.fetchval("SELECT min(id) FROM kb_chunks WHERE kb_id = $1", kb_id)
    np_top = np.argsort(-(queries @ corpus.vectors.T), axis=1)[:, :10] + first_id
    np_agree = recall_at_10([list(map(int, t)) for t in np_top], exact["none"][1])
    profile = nn_profile(corpus.vectors, queries)
    rows: list[dict[str, Any]] = []
    for m, efc in builds:
        await conn.execute("DROP INDEX IF EXISTS ix_kb_chunks_embedding_hnsw")
        await conn.execute("SET maintenance_work_mem = '1GB'")
        t0 = time.perf_counter()
        await conn.execute(
            "CREATE INDEX ix_kb_chunks_embedding_hnsw ON kb_chunks USING hnsw (embedding vector_cosine_ops)"
            f" WITH (m = {int(m)}, ef_construction = {int(efc)})"
        )
        index_s = time.perf_counter() - t0
        index_mb = await conn.fetchval("SELECT pg_relation_size('ix_kb_chunks_embedding_hnsw')") / 2**20
        await conn.execute("ANALYZE kb_chunks")
        ann_plan = await plan_of(sessions, kb_id, queries[0].tolist(), exact=False)
        assert "ix_kb_chunks_embedding_hnsw" in ann_plan, ann_plan
        exact_plan = await plan_of(sessions, kb_id, queries[0].tolist(), exact=True)
        assert "ix_kb_chunks_embedding_hnsw" not in exact_plan, exact_plan
        uses_index = {
            label: "ix_kb_chunks_embedding_hnsw"
            in await plan_of(sessions, kb_id, queries[0].tolist(), False, flt)
            for label, flt in FILTERS.items()
        }
        print(f"  {corpus.name:>10} {size:>7,}: m={m} ef_construction={efc}: build {index_s:.1f} s")
        await timed_queries(sessions, kb_id, warmup)
        for scan in scans:
            for label, flt in FILTERS.items():
                for ef in ef_sweep:
                    ann_ms, ann_ids = await timed_queries(
                        sessions, kb_id, queries, ef_search=ef, scan=scan, filters=flt
                    )
                    rows.append(
                        {
                            "corpus": corpus.name,
                            "chunks": size,
                            "m": m,
                            "ef_construction": efc,
                            "build_s": index_s,
                            "index_mb": index_mb,
                            "copy_s": copy_s,
                            "scan": scan,
                            "filter": label,
                            "index_used": uses_index[label],
                            "ef_search": ef,
                            "p50_ms": pct(ann_ms, 50),
                            "p95_ms": pct(ann_ms, 95),
                            "recall": recall_at_10(ann_ids, exact[label][1]),
                            "short": statistics.mean(len(i) < 10 for i in ann_ids),
                            "exact_p50_ms": pct(exact[label][0], 50),
                            "exact_p95_ms": pct(exact[label][0], 95),
                            "numpy_agree": np_agree,
                            **profile,
                        }
                    )
    return rows


N_TIMED = 200


async def bench_queries(
    port: int,
    sizes: list[int],
    corpora: list[str],
    builds: list[tuple[int, int]],
    ef_sweep: list[int],
    scans: list[str],
    threads: int,
) -> list[dict[str, Any]]:
    import asyncpg
    from pgvector.asyncpg import register_vector
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/nexus")
    await register_vector(conn)
    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nexus")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    results: list[dict[str, Any]] = []
    try:
        for size in sizes:
            for corpus in make_corpora(size, corpora, N_TIMED + 20, threads):
                # The whole build sweep on the realistic corpus at the largest size; pgvector's
                # defaults and the production build (migration 0009) for the others.
                if size != sizes[-1]:
                    size_builds = [PROD_BUILD]
                elif corpus.name in ("calibrated", "real"):
                    size_builds = builds
                else:
                    size_builds = list(dict.fromkeys([(16, 64), PROD_BUILD]))
                results += await bench_corpus(conn, sessions, corpus, size_builds, ef_sweep, scans)
    finally:
        await conn.close()
        await engine.dispose()
    return results


# --- report -------------------------------------------------------------------------------------


def report(ingest: dict[str, float] | None, queries: list[dict[str, Any]]) -> None:
    if ingest is not None:
        i = ingest
        print(
            f"\ningest: {int(i['chunks'])} chunks (mean {i['tokens_mean']:.0f} tokens), local MiniLM int8, "
            f"batch {RagSettings().embed_batch}"
        )
        print(
            f"  embed  {i['embed_s']:6.2f} s  {i['embed_cps']:7.1f} chunks/s  (load {i['model_load_s']:.2f} s)"
        )
        print(
            f"  store  {i['store_s']:6.2f} s  {i['store_cps']:7.1f} chunks/s  "
            f"(insert_chunks {i['insert_s']:.2f} s + set_embeddings {i['set_vectors_s']:.2f} s)"
        )
        print(
            f"  query embedding (1 sentence): p50 {i['query_embed_p50_ms']:.1f} ms, "
            f"p95 {i['query_embed_p95_ms']:.1f} ms"
        )
    print(
        "\nnearest-neighbour profile of the queries (exact cosine; 1-NN p10/p50/p90, 10-NN p50, gap 10→11):"
    )
    seen: set[tuple[str, int]] = set()
    for r in queries:
        key = (r["corpus"], r["chunks"])
        if key in seen:
            continue
        seen.add(key)
        print(
            f"  {r['corpus']:>10} {r['chunks']:>7,}: {r['nn1_p10']:.3f}/{r['nn1_p50']:.3f}/{r['nn1_p90']:.3f}"
            f"  {r['nn10_p50']:.3f}  {r['gap10_p50']:.4f}   exact SQL vs numpy top-10: {r['numpy_agree']:.3f}"
        )
    print(
        f"\n{'corpus':>10} {'chunks':>8} {'m/efc':>7} {'build s':>7} {'scan':>7} {'filter':>6} {'ef':>4} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'recall':>7} {'<10':>5} {'idx':>3} {'exact p50/p95':>13}  "
        f"(target recall ≥ {TARGET_RECALL}, p95 ≤ {TARGET_P95_MS:.0f} ms)"
    )
    for r in queries:
        ok = r["recall"] >= TARGET_RECALL and r["p95_ms"] <= TARGET_P95_MS
        print(
            f"{r['corpus']:>10} {r['chunks']:>8,} {r['m']:>3}/{r['ef_construction']:<3} {r['build_s']:>7.1f} "
            f"{r['scan'][:7]:>7} {r['filter']:>6} {r['ef_search']:>4} {r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} "
            f"{r['recall']:>7.3f} {r['short']:>5.2f} {'yes' if r['index_used'] else 'no':>3} "
            f"{r['exact_p50_ms']:>6.1f}/{r['exact_p95_ms']:<6.1f} "
            f" {'OK' if ok else 'MISSED'}"
        )


def run(
    chunks: int = 2_000,
    sizes: tuple[int, ...] = (10_000, 100_000),
    corpora: tuple[str, ...] = ("real", "calibrated", "isotropic", "uniform"),
    builds: tuple[tuple[int, int], ...] = ((16, 64), (24, 128), (32, 200)),
    ef_sweep: tuple[int, ...] = (40, 100, 200),
    scans: tuple[str, ...] = ("strict_order", "relaxed_order"),
    threads: int = 2,
) -> dict[str, object]:
    async def main(port: int) -> tuple[dict[str, float] | None, list[dict[str, Any]]]:
        ingest = await bench_ingest(port, chunks, threads) if chunks else None
        rows = await bench_queries(
            port, sorted(sizes), list(corpora), list(builds), sorted(ef_sweep), list(scans), threads
        )
        return ingest, rows

    with embedded_postgres() as port:
        ingest, queries = asyncio.run(main(port))
    report(ingest, queries)
    return {"ingest": ingest, "queries": queries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2_000, help="Chunks to embed and store (0: skip).")
    parser.add_argument("--sizes", default="10000,100000", help="Knowledge-base sizes for queries.")
    parser.add_argument(
        "--corpora",
        default="real,calibrated,isotropic,uniform",
        help="Vector corpora (see bench/knowledge_corpus.py).",
    )
    parser.add_argument(
        "--builds",
        default="16:64,24:128,32:200",
        help="HNSW m:ef_construction builds of the realistic corpora at the largest size "
        "(other corpora: 16:64 and the production build; smaller sizes: the production build).",
    )
    parser.add_argument("--ef-sweep", default="40,100,200", help="hnsw.ef_search values.")
    parser.add_argument("--scans", default="strict_order,relaxed_order", help="hnsw.iterative_scan modes.")
    parser.add_argument("--threads", type=int, default=2, help="ONNX intra-op threads of the embedder.")
    args = parser.parse_args()
    run(
        args.chunks,
        tuple(int(s) for s in args.sizes.split(",")),
        tuple(args.corpora.split(",")),
        tuple((int(b.split(":")[0]), int(b.split(":")[1])) for b in args.builds.split(",")),
        tuple(int(s) for s in args.ef_sweep.split(",") if s),
        tuple(args.scans.split(",")),
        args.threads,
    )


if __name__ == "__main__":
    main()
