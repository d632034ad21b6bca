"""Elasticsearch benchmark against a live node (``make es-start``), in one run:

1. write path: ``ElasticsearchVectorStore.upsert_chunks`` against the floor, the client's
   ``helpers.bulk`` of the very same documents (same mapping, same batch size), alternating
   rounds so neither side gets the warm node;
2. kNN latency p50/p95 at k=10 through ``store.search`` on ``--vectors`` (default 50,000)
   seeded random unit vectors of 384 dims (the all-MiniLM-L6-v2 shape) and random unit queries;
3. recall@10 of ``int8_hnsw`` (and ``bbq_hnsw`` when the server has it) against exact search
   (the true top 10 by dot product, computed with numpy on the same vectors), at the default
   ``num_candidates`` and a few others: on the random vectors (the worst case for HNSW: no
   cluster structure) and on real all-MiniLM-L6-v2 vectors of ``--real-corpus`` text windows
   (default ``../shared/corpus``, held-out windows as queries).

With ``--scale``: recall@10 and p50/p95 latency at each ``--num-candidates`` for ``int8_hnsw``
and ``bbq_hnsw`` on >= 200,000 real window vectors (three Debian documentation packages chunked
and embedded by the project's default chunker and encoder, ``scale_corpus.py``; held-out
sentences as queries), the bytes per chunk of that index, and the defaults these figures give
(``es_scale.py``). The corpus and its vectors are cached (``--scale-cache``).

With ``--windows N`` every random chunk also carries N random window vectors (multi-vector
chunks, nested ``passages``): the exact top 10 is then by each chunk's best vector.

Usage: ``python bench/es_bench.py [--url http://127.0.0.1:9200] [--vectors 50000] [--windows 3]``
or ``python bench/es_bench.py --scale [--num-candidates 10 20 50 100 200] [--url ...]``
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

import numpy as np
from elasticsearch import Elasticsearch, helpers

from genai_ingest.config import ElasticsearchSettings, Settings
from genai_ingest.models import Chunk, EmbeddedChunk
from genai_ingest.stores.elasticsearch import (
    ElasticsearchVectorStore,
    client_from_settings,
    upsert_actions,
)

REPO = Path(__file__).resolve().parent.parent
DIMS = 384
K = 10
MODEL = "bench-random-384"


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((n, DIMS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chunks_of(
    vectors: np.ndarray, offset: int, windows: np.ndarray | None = None
) -> list[EmbeddedChunk]:
    """Bench chunks; ``windows`` (n, w, dims): each chunk's window vectors."""
    out = []
    for i, vector in enumerate(vectors, start=offset):
        text = f"bench chunk {i} " + "lorem ipsum dolor sit amet " * 8
        chunk = Chunk(
            chunk_id=f"c{i:07d}",
            doc_id=f"d{i // 20:06d}",
            index=i % 20,
            text=text,
            text_hash=f"h{i}",
            token_count=48,
            metadata={"source": f"file:///bench/{i // 20}.txt", "language": "en"},
        )
        rows = windows[i - offset] if windows is not None else None
        out.append(EmbeddedChunk(chunk, vector, rows))
    return out


def open_store(url: str, alias: str, **options: object) -> ElasticsearchVectorStore:
    settings = Settings(store_url=url, elasticsearch=ElasticsearchSettings(index=alias, **options))
    store = ElasticsearchVectorStore.from_settings(settings)
    store.ensure_index(MODEL, DIMS)
    return store


def write_ours(store: ElasticsearchVectorStore, items: list[EmbeddedChunk], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        store.upsert_chunks(items[i : i + batch])
    return time.perf_counter() - started


def write_floor(client: Elasticsearch, index: str, items: list[EmbeddedChunk], batch: int) -> float:
    actions = list(upsert_actions(index, items))  # the same documents, prepared beforehand
    started = time.perf_counter()
    helpers.bulk(client, actions, chunk_size=batch, max_chunk_bytes=10 * 1024 * 1024)
    return time.perf_counter() - started


def bench_writes(url: str, alias: str, items: list[EmbeddedChunk], rounds: int) -> dict:
    ours = open_store(url, alias)
    floor = open_store(url, f"{alias}-floor")
    batch = ours._es.bulk_max_docs
    size = len(items) // (2 * rounds)
    t_ours = t_floor = 0.0
    for r in range(rounds):
        part = items[2 * r * size : (2 * r + 1) * size]
        other = items[(2 * r + 1) * size : (2 * r + 2) * size]
        if r % 2:
            t_ours += write_ours(ours, part, batch)
            t_floor += write_floor(floor.client, floor.write_index, other, batch)
        else:
            t_floor += write_floor(floor.client, floor.write_index, other, batch)
            t_ours += write_ours(ours, part, batch)
    written = size * rounds
    floor.drop()
    floor.close()
    return {
        "ours": written / t_ours,
        "floor": written / t_floor,
        "chunks": written,
        "ours_store": ours,
    }


def fill(store: ElasticsearchVectorStore, items: list[EmbeddedChunk]) -> None:
    helpers.bulk(store.client, upsert_actions(store.write_index, items), chunk_size=500)
    store.client.indices.refresh(index=store.write_index)


def exact_top(
    vectors: np.ndarray, ids: list[str], queries: np.ndarray, windows: np.ndarray | None = None
) -> list[set[str]]:
    """The true top K chunk ids per query: by the best of each chunk's vectors."""
    scores = queries @ vectors.T
    for j in range(windows.shape[1] if windows is not None else 0):
        scores = np.maximum(scores, queries @ windows[:, j].T)
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return [{ids[j] for j in row} for row in top]


def measure_search(
    store: ElasticsearchVectorStore, queries: np.ndarray, truth: list[set[str]], nc: int
) -> dict:
    store._es = store._es.model_copy(update={"num_candidates": nc})
    store._searcher._es = store._es
    import es_scale  # the scale bench's measurement, without its warm-up

    return es_scale.measure(store, queries, truth, warmup=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:9200")
    parser.add_argument("--vectors", type=int, default=50_000)
    parser.add_argument("--write-chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--num-candidates", type=int, nargs="*", default=None)
    parser.add_argument("--no-bbq", action="store_true", help="skip the bbq_hnsw index")
    parser.add_argument("--real-corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--only-real", action="store_true", help="only the real-vector recall")
    parser.add_argument("--windows", type=int, default=0, help="window vectors per chunk")
    parser.add_argument("--scale", action="store_true", help="only the at-scale real-vector bench")
    parser.add_argument("--scale-cache", type=Path, default=None, help="corpus and vector cache")
    parser.add_argument("--force-merge", action="store_true", help="--scale: also one segment")
    parser.add_argument("--scale-options", nargs="*", default=["int8_hnsw", "bbq_hnsw"])
    args = parser.parse_args()
    if args.scale:
        import es_scale
        import scale_corpus

        cache = args.scale_cache or scale_corpus.default_cache()
        ncs = args.num_candidates or [10, 20, 50, 100, 200]
        es_scale.run(args.url, cache, ncs, tuple(args.scale_options), args.force_merge)
        return
    args.num_candidates = args.num_candidates or [50, 100, 200, 400]
    rng = np.random.default_rng(7)
    vectors = unit_vectors(args.vectors, rng)
    queries = unit_vectors(args.queries, rng)
    windows = None
    if args.windows:
        windows = unit_vectors(args.vectors * args.windows, rng).reshape(args.vectors, -1, DIMS)
    items = chunks_of(vectors, 0, windows)
    ids = [item.chunk.chunk_id for item in items]
    truth = exact_top(vectors, ids, queries, windows)
    alias = f"bench-{uuid.uuid4().hex[:8]}"
    default_nc = ElasticsearchSettings().num_candidates
    client = client_from_settings(Settings(store_url=args.url))
    version = client.nodes.info(node_id="_local", metric="_none")
    print("server:", next(iter(version["nodes"].values()))["version"])
    client.close()
    candidates = sorted({default_nc, *args.num_candidates})
    if args.real_corpus.is_dir():
        real_recall(args.url, alias, args.real_corpus, args.queries, candidates)
    if args.only_real:
        return

    writes = bench_writes(args.url, alias, items[: args.write_chunks], rounds=2)
    store = writes.pop("ours_store")
    print(
        f"write path, {writes['chunks']} chunks each (384-d, {args.windows} windows, "
        "batches of 500): "
        f"ours {writes['ours']:.0f} chunks/s vs helpers.bulk {writes['floor']:.0f} chunks/s "
        f"= {writes['ours'] / writes['floor']:.2f}x (target >= 0.9x)"
    )
    try:
        fill(store, items)  # the rest of the vectors (the written ones are overwritten by id)
        count = store.client.count(index=store.write_index)["count"]
        print(
            f"kNN on {count} random chunks of {1 + args.windows} unit vectors, "
            f"{args.queries} random unit queries, k={K}:"
        )
        for nc in sorted({default_nc, *args.num_candidates}):
            m = measure_search(store, queries, truth, nc)
            mark = " (default)" if nc == default_nc else ""
            print(
                f"  int8_hnsw num_candidates={nc}{mark}: p50 {m['p50_ms']:.1f} ms, "
                f"p95 {m['p95_ms']:.1f} ms, recall@10 {m['recall']:.3f}"
            )
        if not args.no_bbq:
            bbq_recall(args.url, alias, items, queries, truth, default_nc, args.num_candidates)
    finally:
        store.drop()
        store.close()


def real_windows(corpus: Path, words: int = 24, stride: int = 12) -> list[str]:
    """Overlapping word windows of the corpus's text files (read as they are, no parsing)."""
    texts = []
    for path in sorted(corpus.rglob("*")):
        if path.suffix.lower() in (".txt", ".md", ".rst", ".csv", ".asciidoc"):
            tokens = path.read_text(errors="replace").split()
            texts += [" ".join(tokens[i : i + words]) for i in range(0, len(tokens), stride)]
    return [t for t in texts if len(t) > 40]


def real_recall(url: str, alias: str, corpus: Path, queries: int, candidates: list[int]) -> None:
    """recall@10 of int8_hnsw on real all-MiniLM-L6-v2 vectors of corpus text windows; the
    queries are held-out windows (not indexed)."""
    from genai_ingest.config import EmbedSettings
    from genai_ingest.embed.local import LocalEmbedder

    texts = real_windows(corpus)
    started = time.perf_counter()
    vectors = LocalEmbedder(EmbedSettings()).embed(texts).astype(np.float32)
    print(
        f"real vectors: {len(texts)} windows of {corpus} embedded in "
        f"{time.perf_counter() - started:.0f} s"
    )
    rng = np.random.default_rng(11)
    held = rng.choice(len(texts), size=queries, replace=False)
    keep = np.setdiff1d(np.arange(len(texts)), held)
    items = chunks_of(vectors[keep], 0)
    truth = exact_top(vectors[keep], [i.chunk.chunk_id for i in items], vectors[held])
    store = open_store(url, f"{alias}-real")
    try:
        fill(store, items)
        for nc in candidates:
            m = measure_search(store, vectors[held], truth, nc)
            print(
                f"  int8_hnsw on {len(items)} real vectors, num_candidates={nc}: "
                f"p50 {m['p50_ms']:.1f} ms, p95 {m['p95_ms']:.1f} ms, recall@10 {m['recall']:.3f}"
            )
    finally:
        store.drop()
        store.close()


def bbq_recall(
    url: str,
    alias: str,
    items: list[EmbeddedChunk],
    queries: np.ndarray,
    truth: list[set[str]],
    default_nc: int,
    candidates: list[int],
) -> None:
    try:
        bbq = open_store(url, f"{alias}-bbq", index_options="bbq_hnsw")
    except Exception as exc:  # the server decides which index options it has
        print(f"  bbq_hnsw: not available on this server ({exc})")
        return
    try:
        fill(bbq, items)
        for nc in sorted({default_nc, *candidates}):
            m = measure_search(bbq, queries, truth, nc)
            print(
                f"  bbq_hnsw num_candidates={nc}: p50 {m['p50_ms']:.1f} ms, "
                f"p95 {m['p95_ms']:.1f} ms, recall@10 {m['recall']:.3f}"
            )
    finally:
        bbq.drop()
        bbq.close()


if __name__ == "__main__":
    main()
