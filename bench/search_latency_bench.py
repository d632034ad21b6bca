"""Query latency of dense, lexical and hybrid search, side by side, on the embedded SQLite store
and (with ``--es-url`` or ``ELASTICSEARCH_URL``) on Elasticsearch, at ``--chunks`` chunks
(default 100,000).

Chunks are ~150-word pieces of the real corpus text (``bench/.cache/parsed``, cycled to the
count: realistic term statistics for BM25), each with a chunk vector and ``--windows`` window
vectors (default 3: the corpus has ~4.2 vectors per chunk), seeded random 384-dim unit vectors
(the cost of exact kNN does not depend on the values). Queries are the questions of the
development and held-out QA sets, each with a random unit query vector. Each store is searched
once first (SQLite loads its vector matrix; warm search is what is measured), then every
query in every mode, modes interleaved per query so that machine load hits them alike; k=5,
``FusionSettings`` defaults.

Usage: ``python bench/search_latency_bench.py [--chunks 100000] [--windows 3] [--es-url URL]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from itertools import cycle, islice
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from genai_ingest.config import SearchMode  # noqa: E402
from genai_ingest.models import Chunk, EmbeddedChunk, sha256_hex  # noqa: E402
from genai_ingest.search.evaluate import load_qa  # noqa: E402

PARSED = REPO / "bench" / ".cache" / "parsed"
QA = [REPO / "bench" / "qa" / "corpus_qa.jsonl", REPO / "bench" / "qa" / "corpus_qa_holdout.jsonl"]
DIMS, K, WORDS = 384, 5, 150
MODEL = "bench-random-384"


def corpus_pieces() -> list[str]:
    """~WORDS-word pieces of every cached parse (run ``retrieval_corpus.py`` first)."""
    pieces = []
    for path in sorted(PARSED.glob("*.json")):
        words = json.loads(path.read_text()).get("text", "").split()
        pieces += [" ".join(words[i : i + WORDS]) for i in range(0, len(words), WORDS)]
    if not pieces:
        raise SystemExit(f"no parsed corpus in {PARSED}: run bench/retrieval_corpus.py first")
    return pieces


def bench_chunks(count: int, windows: int, rng: np.random.Generator) -> list[EmbeddedChunk]:
    def units(n: int) -> np.ndarray:
        v = rng.standard_normal((n, DIMS)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    items = []
    for i, text in enumerate(islice(cycle(corpus_pieces()), count)):
        chunk = Chunk(
            chunk_id=f"c{i:07d}",
            doc_id=f"d{i // 20:06d}",
            index=i % 20,
            text=text,
            text_hash=sha256_hex(f"{i}:{text}"),
            token_count=WORDS,
            metadata={"source": f"file:///bench/{i // 20}.txt", "language": "en"},
        )
        items.append(EmbeddedChunk(chunk, units(1)[0], units(windows) if windows else None))
    return items


def measure(
    search: Callable[[str, np.ndarray, SearchMode], object],
    queries: list[tuple[str, np.ndarray]],
) -> dict[SearchMode, list[float]]:
    """Milliseconds per query and mode, after one warm-up search per mode."""
    for mode in SearchMode:
        search(*queries[0], mode)
    times: dict[SearchMode, list[float]] = {mode: [] for mode in SearchMode}
    for text, vector in queries:
        for mode in SearchMode:
            started = time.perf_counter()
            search(text, vector, mode)
            times[mode].append((time.perf_counter() - started) * 1000)
    return times


def print_row(store: str, chunks: int, times: dict[SearchMode, list[float]]) -> None:
    cells = []
    for mode in SearchMode:
        ordered = sorted(times[mode])
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        cells.append(f"{statistics.median(ordered):>8.1f} {p95:>8.1f}")
    print(f"{store:<26} {chunks:>8} " + "  ".join(cells), flush=True)


def sqlite_times(items: list[EmbeddedChunk], queries: list) -> dict[SearchMode, list[float]]:
    from genai_ingest.stores.sqlite import SQLiteVectorStore

    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteVectorStore(Path(folder) / "bench.db")
        store.ensure_index(MODEL, DIMS)
        started = time.perf_counter()
        for begin in range(0, len(items), 1000):
            store.upsert_chunks(items[begin : begin + 1000])
        print(f"sqlite: {len(items)} chunks written in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        store.search(queries[0][1], k=K)
        print(f"sqlite: first (cold) dense search {time.perf_counter() - started:.1f} s")
        try:
            return measure(lambda t, v, m: store.search(v, K, text=t, mode=m), queries)
        finally:
            store.close()


def es_times(url: str, items: list[EmbeddedChunk], queries: list) -> dict[SearchMode, list[float]]:
    from elasticsearch import helpers

    from genai_ingest.config import ElasticsearchSettings, Settings
    from genai_ingest.stores.elasticsearch import ElasticsearchVectorStore, upsert_actions

    settings = Settings(
        store_url=url, elasticsearch=ElasticsearchSettings(index=f"lat-{uuid.uuid4().hex[:8]}")
    )
    store = ElasticsearchVectorStore.from_settings(settings)
    try:
        store.ensure_index(MODEL, DIMS)
        started = time.perf_counter()
        helpers.bulk(store.client, upsert_actions(store.write_index, items), chunk_size=500)
        store.client.indices.refresh(index=store.write_index)
        print(
            f"elasticsearch: {len(items)} chunks written in {time.perf_counter() - started:.0f} s"
        )
        return measure(lambda t, v, m: store.search(v, K, text=t, mode=m), queries)
    finally:
        store.drop()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--windows", type=int, default=3, help="window vectors per chunk")
    parser.add_argument("--es-url", default=os.environ.get("ELASTICSEARCH_URL"))
    parser.add_argument("--es-chunks", type=int, default=None, help="default: --chunks")
    parser.add_argument(
        "--es-without-windows",
        action="store_true",
        help="Elasticsearch gets each chunk's own vector only (writing 4 vectors per chunk "
        "takes ~4x as long on a small node)",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    texts = [item.question for path in QA for item in load_qa(path)]
    query_vectors = rng.standard_normal((len(texts), DIMS)).astype(np.float32)
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    queries = list(zip(texts, query_vectors, strict=True))
    items = bench_chunks(args.chunks, args.windows, rng)
    rows = [("sqlite", len(items), sqlite_times(items, queries))]
    if args.es_url:
        es_items = items[: args.es_chunks or len(items)]
        if args.es_without_windows:
            es_items = [EmbeddedChunk(item.chunk, item.vector) for item in es_items]
        name = "elasticsearch" + (" (1 vector)" if args.es_without_windows else "")
        rows.append((name, len(es_items), es_times(args.es_url, es_items, queries)))
    print(f"\n{len(queries)} queries, k={K}, {1 + args.windows} vectors per chunk; warm, ms:")
    modes = "  ".join(f"{m.value + ' p50':>8} {'p95':>8}" for m in SearchMode)
    print(f"{'store':<26} {'chunks':>8} {modes}")
    for row in rows:
        print_row(*row)


if __name__ == "__main__":
    main()
