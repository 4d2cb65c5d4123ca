"""Knowledge-base benchmark: ingest throughput, vector query latency and HNSW recall@10.

One run, on a throwaway embedded Postgres (own temp dir, free port, migrated to head):

1. Ingest: ``--chunks`` real text chunks (generated English sentences cut by the production
   chunker at 200 tokens) embedded with the local MiniLM (int8 ONNX, 2 threads) in batches of
   the production ``embed_batch`` (32), then stored the way the ingestion activities store them
   (``insert_chunks`` then ``set_embeddings``, one transaction per batch). Embedding and storing
   are timed separately. Single-query embedding latency is reported here too, since the query
   latency of step 2 excludes it.
2. Query: seeded, clustered unit vectors bulk-loaded (binary COPY) into ``kb_chunks`` for one
   tenant / knowledge base, the HNSW index rebuilt with its migration DDL, ``ANALYZE``d. For
   ``--queries`` query vectors from the same distribution: p50/p95 of
   :meth:`RagRepository.vector_search` (the production vector path), and recall@10 against the
   same call with ``enable_indexscan = off`` (exact: sequential scan + sort on the distance).

    python -m bench.knowledge [--chunks 2000] [--sizes 10000,100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cli.embedded import ensure_database, free_port, postgres_spec, start_server, stop_process
from core.db.migrate import upgrade
from core.db.rag_models import EMBEDDING_DIMS
from core.rag.chunk import chunk_text, embedding_text
from core.rag.settings import LOCAL_MODEL, RagSettings
from core.rag.store import HNSW_EF_SEARCH, RagRepository

TARGET_RECALL = 0.95
TARGET_P95_MS = 30.0
TENANT = "bench"
PROD_EF_SEARCH = HNSW_EF_SEARCH  # what the repository sets (pgvector's own default is 40)
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


async def make_kb(conn: object, name: str, documents: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A knowledge base with ``documents`` ready documents (asyncpg connection)."""
    kb_id = uuid.uuid4()
    await conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO tenants (id, name, is_platform, settings) VALUES ($1, $1, false, '{}')"
        " ON CONFLICT DO NOTHING",
        TENANT,
    )
    await conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO knowledge_bases (id, tenant_id, name, description, embedding_model, chunk_tokens,"
        " chunk_overlap, created_by) VALUES ($1, $2, $3, '', $4, 200, 30, 'bench')",
        kb_id,
        TENANT,
        name,
        LOCAL_MODEL,
    )
    docs = [uuid.uuid4() for _ in range(documents)]
    for i, doc in enumerate(docs):
        await conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO kb_documents (id, tenant_id, kb_id, title, content_type, sha256, size, status,"
            " source_payload_id, workflow_id, chunk_count, metadata, created_by)"
            " VALUES ($1, $2, $3, $4, 'text/plain', $5, 0, 'ready', $6, 'bench', 0, '{}', 'bench')",
            doc,
            TENANT,
            kb_id,
            f"doc {i}",
            hashlib.sha256(doc.bytes).hexdigest(),
            uuid.uuid4(),
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


class ClusteredVectors:
    """Unit vectors around ``clusters`` random centres, spread varying per cluster (seeded)."""

    def __init__(self, clusters: int = 200, seed: int = SEED) -> None:
        self.rng = np.random.default_rng(seed)
        centres = self.rng.standard_normal((clusters, EMBEDDING_DIMS)).astype(np.float32)
        # A shared component, as real sentence embeddings are anisotropic (not spread over the sphere).
        common = self.rng.standard_normal(EMBEDDING_DIMS).astype(np.float32)
        centres += 1.5 * common
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        self.spread = self.rng.uniform(0.03, 0.07, clusters).astype(np.float32)
        self.weights = self.rng.dirichlet(np.full(clusters, 2.0))

    def sample(self, n: int) -> npt.NDArray[np.float32]:
        which = self.rng.choice(len(self.centres), size=n, p=self.weights)
        noise = self.rng.standard_normal((n, EMBEDDING_DIMS)).astype(np.float32)
        points = self.centres[which] + noise * self.spread[which, None]
        out: npt.NDArray[np.float32] = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(
            np.float32
        )
        return out


async def load_vectors(
    conn: object, kb_id: uuid.UUID, docs: list[uuid.UUID], vectors: npt.NDArray[np.float32], offset: int
) -> None:
    """Binary COPY of ``vectors`` into kb_chunks (chunk_index ``offset + i``, spread over docs)."""
    per_doc = len(docs)
    records = (
        (
            TENANT,
            kb_id,
            docs[(offset + i) % per_doc],
            (offset + i) // per_doc,
            f"synthetic chunk {offset + i}",
            3,
            "{}",
            vec,
            LOCAL_MODEL,
        )
        for i, vec in enumerate(vectors)
    )
    await conn.copy_records_to_table(  # type: ignore[attr-defined]
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


async def timed_queries(
    sessions: object, kb_id: uuid.UUID, queries: npt.NDArray[np.float32], ef_search: int, exact: bool
) -> tuple[list[float], list[list[int]]]:
    """Run every query through ``vector_search``; (latencies ms, top-10 chunk ids)."""
    from sqlalchemy import text

    latencies: list[float] = []
    ids: list[list[int]] = []
    for q in queries:
        vec = q.tolist()
        async with sessions() as session, session.begin():  # type: ignore[operator]
            if exact:
                await session.execute(text("SET LOCAL enable_indexscan = off"))
            t0 = time.perf_counter()
            hits = await RagRepository(session).vector_search(TENANT, kb_id, vec, 10, ef_search=ef_search)
            latencies.append((time.perf_counter() - t0) * 1000)
        ids.append([h.chunk_id for h in hits])
    return latencies, ids


async def plan_of(sessions: object, kb_id: uuid.UUID, query: list[float], exact: bool) -> str:
    """EXPLAIN of the repository's vector query (checks the index is or is not used)."""
    from sqlalchemy import text
    from sqlalchemy.dialects import postgresql

    from core.db.rag_models import KbChunk

    async with sessions() as session, session.begin():  # type: ignore[operator]
        repo = RagRepository(session)
        distance = KbChunk.embedding.cosine_distance(query)
        stmt = (
            repo._searchable(TENANT, kb_id, None)
            .add_columns((1 - distance).label("score"))
            .where(KbChunk.embedding.is_not(None))
            .order_by(distance)
            .limit(10)
        )
        if exact:
            await session.execute(text("SET LOCAL enable_indexscan = off"))
        sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        rows = await session.execute(text("EXPLAIN " + sql))
        return "\n".join(r[0] for r in rows)


async def bench_queries(
    port: int, sizes: list[int], n_queries: int, ef_sweep: list[int]
) -> list[dict[str, float]]:
    import asyncpg
    from pgvector.asyncpg import register_vector
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    gen = ClusteredVectors()
    queries = gen.sample(n_queries)
    warmup = gen.sample(20)
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/nexus")
    await register_vector(conn)
    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nexus")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    results: list[dict[str, float]] = []
    try:
        await conn.execute("TRUNCATE kb_chunks")
        kb_id, docs = await make_kb(conn, "query", 100)
        index_ddl = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_kb_chunks_embedding_hnsw'"
        )
        loaded = 0
        all_vectors: list[npt.NDArray[np.float32]] = []
        for size in sizes:
            new = gen.sample(size - loaded)
            all_vectors.append(new)
            await conn.execute("DROP INDEX ix_kb_chunks_embedding_hnsw")
            t0 = time.perf_counter()
            await load_vectors(conn, kb_id, docs, new, loaded)
            load_s = time.perf_counter() - t0
            loaded = size
            await conn.execute("SET maintenance_work_mem = '1GB'")
            t0 = time.perf_counter()
            await conn.execute(index_ddl)
            index_s = time.perf_counter() - t0
            await conn.execute("VACUUM ANALYZE kb_chunks")
            await conn.execute("ANALYZE kb_documents")
            print(f"  {size:>7,} chunks: COPY {load_s:.1f} s, HNSW build {index_s:.1f} s")

            ann_plan = await plan_of(sessions, kb_id, queries[0].tolist(), exact=False)
            exact_plan = await plan_of(sessions, kb_id, queries[0].tolist(), exact=True)
            assert "ix_kb_chunks_embedding_hnsw" in ann_plan, ann_plan
            assert "ix_kb_chunks_embedding_hnsw" not in exact_plan, exact_plan

            await timed_queries(sessions, kb_id, warmup, PROD_EF_SEARCH, exact=False)
            exact_ms, exact_ids = await timed_queries(sessions, kb_id, queries, PROD_EF_SEARCH, exact=True)

            # Cross-check the exact SQL against numpy brute force (ids are assigned in load order).
            matrix = np.concatenate(all_vectors)
            first_id = await conn.fetchval("SELECT min(id) FROM kb_chunks WHERE kb_id = $1", kb_id)
            np_top = np.argsort(-(queries @ matrix.T), axis=1)[:, :10] + first_id
            np_agree = statistics.mean(
                len(set(e) & set(map(int, t))) / 10 for e, t in zip(exact_ids, np_top, strict=True)
            )

            efs = [PROD_EF_SEARCH] + (ef_sweep if size == sizes[-1] else [])
            for ef in efs:
                ann_ms, ann_ids = await timed_queries(sessions, kb_id, queries, ef, exact=False)
                recall = statistics.mean(
                    len(set(a) & set(e)) / 10 for a, e in zip(ann_ids, exact_ids, strict=True)
                )
                results.append(
                    {
                        "chunks": size,
                        "ef_search": ef,
                        "p50_ms": pct(ann_ms, 50),
                        "p95_ms": pct(ann_ms, 95),
                        "recall": recall,
                        "exact_p50_ms": pct(exact_ms, 50),
                        "exact_p95_ms": pct(exact_ms, 95),
                        "numpy_agree": np_agree,
                        "copy_s": load_s,
                        "index_s": index_s,
                    }
                )
    finally:
        await conn.close()
        await engine.dispose()
    return results


# --- report -------------------------------------------------------------------------------------


def report(ingest: dict[str, float], queries: list[dict[str, float]]) -> None:
    i = ingest
    print(
        f"\ningest: {int(i['chunks'])} chunks (mean {i['tokens_mean']:.0f} tokens), local MiniLM int8, "
        f"batch {RagSettings().embed_batch}"
    )
    print(
        f"  embed  {i['embed_s']:6.2f} s  {i['embed_cps']:7.1f} chunks/s  (model load {i['model_load_s']:.2f} s)"
    )
    print(
        f"  store  {i['store_s']:6.2f} s  {i['store_cps']:7.1f} chunks/s  "
        f"(insert_chunks {i['insert_s']:.2f} s + set_embeddings {i['set_vectors_s']:.2f} s)"
    )
    print(
        f"  query embedding (1 sentence): p50 {i['query_embed_p50_ms']:.1f} ms, p95 {i['query_embed_p95_ms']:.1f} ms"
    )
    print(
        f"\n{'chunks':>8} {'ef_search':>9} {'p50 ms':>7} {'p95 ms':>7} {'recall@10':>9} "
        f"{'exact p50':>9} {'exact p95':>9}  verdict (recall ≥ {TARGET_RECALL}, p95 ≤ {TARGET_P95_MS:.0f} ms)"
    )
    for r in queries:
        ok = r["recall"] >= TARGET_RECALL and r["p95_ms"] <= TARGET_P95_MS
        print(
            f"{int(r['chunks']):>8,} {int(r['ef_search']):>9} {r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} "
            f"{r['recall']:>9.3f} {r['exact_p50_ms']:>9.1f} {r['exact_p95_ms']:>9.1f}  {'OK' if ok else 'MISSED'}"
        )
    agree = min(r["numpy_agree"] for r in queries)
    print(f"(exact SQL vs numpy brute force top-10 agreement: {agree:.3f})")


def run(
    chunks: int = 2_000,
    sizes: tuple[int, ...] = (10_000, 100_000),
    n_queries: int = 200,
    ef_sweep: tuple[int, ...] = (20, 64, 100, 200),
    threads: int = 2,
) -> dict[str, object]:
    async def main(port: int) -> tuple[dict[str, float], list[dict[str, float]]]:
        ingest = await bench_ingest(port, chunks, threads)
        return ingest, await bench_queries(port, sorted(sizes), n_queries, sorted(ef_sweep))

    with embedded_postgres() as port:
        ingest, queries = asyncio.run(main(port))
    report(ingest, queries)
    return {"ingest": ingest, "queries": queries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2_000, help="Chunks to embed and store.")
    parser.add_argument("--sizes", default="10000,100000", help="Knowledge-base sizes for queries.")
    parser.add_argument("--queries", type=int, default=200, help="Query vectors per size.")
    parser.add_argument(
        "--ef-sweep", default="20,64,100,200", help="Extra hnsw.ef_search at the largest size."
    )
    parser.add_argument("--threads", type=int, default=2, help="ONNX intra-op threads of the embedder.")
    args = parser.parse_args()
    run(
        args.chunks,
        tuple(int(s) for s in args.sizes.split(",")),
        args.queries,
        tuple(int(s) for s in args.ef_sweep.split(",") if s),
        args.threads,
    )


if __name__ == "__main__":
    main()
