"""kNN recall and latency at scale on real window vectors (``es_bench.py --scale``), and the
bytes per chunk of that index.

The corpus is ``scale_corpus.py``'s (three Debian documentation packages, chunked and embedded
by the project's own chunker and default encoder, windows included). For each index option
(``int8_hnsw``, ``bbq_hnsw``) its chunks are written through ``ElasticsearchVectorStore``
(``upsert_chunks``, MinHash signatures and band keys as a run writes them, one ledger row per
document), then the held-out query sentences are searched (dense, k=10) at each
``num_candidates``: recall@10 against the exact top 10 (numpy over the very same vectors, a
chunk scored by its best vector as the store scores it) and p50/p95 latency of ``store.search``.
Measured once the node's own merges are done (the index's steady state); with ``force_merge``
also after a force merge to one segment (the fewest graph entries: the lowest recall at a given
``num_candidates``). The defaults chosen are the cheapest option and ``num_candidates`` whose
recall@10 is >= ``TARGET`` in every state measured. Sizes come from
``_disk_usage?run_expensive_tasks=true`` on the last state.
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path

import numpy as np
from scale_corpus import ScaleCorpus, prepare

from genai_ingest.config import ElasticsearchSettings, Settings
from genai_ingest.models import DocStatus, DocumentRecord, EmbeddedChunk, sha256_hex
from genai_ingest.stores.elasticsearch import ElasticsearchVectorStore
from genai_ingest.text.dedup import MinHasher, signature_to_bytes

K = 10
TARGET = 0.95
OPTIONS = ("int8_hnsw", "bbq_hnsw")
WARMUP = 50
STATES = ("written", "merged")


def exact_top(corpus: ScaleCorpus, k: int = K) -> list[set[str]]:
    """The true top k chunk ids of each query: chunks scored by their best vector."""
    starts = corpus.offsets[:-1]
    best = np.empty((len(corpus.query_vectors), len(starts)), np.float32)
    step = 50_000
    for lo in range(0, len(starts), step):  # in slices of chunks: bounded memory
        hi = min(lo + step, len(starts))
        rows = np.asarray(corpus.vectors[starts[lo] : corpus.offsets[hi]])
        scores = corpus.query_vectors @ rows.T
        best[:, lo:hi] = np.maximum.reduceat(scores, starts[lo:hi] - starts[lo], axis=1)
    top = np.argpartition(-best, k, axis=1)[:, :k]
    return [{corpus.chunks[j].chunk_id for j in row} for row in top]


def open_store(url: str, alias: str, option: str, nc: int = 100) -> ElasticsearchVectorStore:
    es = ElasticsearchSettings(index=alias, index_options=option, num_candidates=nc)
    return ElasticsearchVectorStore.from_settings(Settings(store_url=url, elasticsearch=es))


def write_corpus(store: ElasticsearchVectorStore, corpus: ScaleCorpus, batch: int = 500) -> float:
    """Every chunk (with its signature and band keys) and one ledger row per document, through
    the store's own write path; returns the seconds taken."""
    hasher = MinHasher(Settings().dedup)
    threshold = Settings().dedup.chunk_threshold
    started = time.perf_counter()
    by_doc: dict[str, list[int]] = {}
    for lo in range(0, len(corpus.chunks), batch):
        items = []
        for i in range(lo, min(lo + batch, len(corpus.chunks))):
            chunk = corpus.chunks[i]
            rows = np.asarray(corpus.vectors[corpus.offsets[i] : corpus.offsets[i + 1]])
            if chunk.signature is None:  # signed once, for every index option
                signature = hasher.signature(chunk.text)
                chunk.signature = signature_to_bytes(signature)
                chunk.band_keys = hasher.band_keys(signature, threshold)
            chunk.metadata.setdefault("source_type", "deb")
            items.append(EmbeddedChunk(chunk, rows[0], rows[1:] if len(rows) > 1 else None))
            by_doc.setdefault(chunk.doc_id, []).append(i)
        store.upsert_chunks(items)
    for doc_id, ids in by_doc.items():
        store.put_document(ledger_row(corpus, doc_id, ids, hasher))
    store.client.indices.refresh(index=store.write_index)
    return time.perf_counter() - started


def ledger_row(
    corpus: ScaleCorpus, doc_id: str, members: list[int], hasher: MinHasher
) -> DocumentRecord:
    """A document's ledger row as a run writes it (its text: its chunks' texts joined)."""
    chunks = [corpus.chunks[i] for i in members]
    text = "\n\n".join(c.text for c in chunks)
    signature = hasher.signature(text)
    return DocumentRecord(
        doc_id=doc_id,
        source=chunks[0].metadata["source"],
        version=sha256_hex(text),
        status=DocStatus.INDEXED,
        chunk_ids=[c.chunk_id for c in chunks],
        parser="text",
        language="en",
        text_hash=sha256_hex(text),
        signature=signature_to_bytes(signature),
        band_keys=hasher.band_keys(signature, Settings().dedup.document_threshold),
        metadata={"format": "text", "size": len(text.encode()), "parsers_tried": ["text"]},
    )


def measure(
    store: ElasticsearchVectorStore,
    queries: np.ndarray,
    truth: list[set[str]],
    warmup: int = WARMUP,
) -> dict[str, float]:
    """recall@K and p50/p95 latency of ``store.search`` (after ``warmup`` unmeasured queries)."""
    for query in queries[:warmup]:
        store.search(query, k=K)
    latencies, recalls = [], []
    for query, expected in zip(queries, truth, strict=True):
        started = time.perf_counter()
        hits = store.search(query, k=K)
        latencies.append((time.perf_counter() - started) * 1000)
        recalls.append(len({h.chunk_id for h in hits} & expected) / K)
    latencies.sort()
    return {
        "recall": float(np.mean(recalls)),
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
    }


def segments(store: ElasticsearchVectorStore) -> int:
    stats = store.client.indices.segments(index=store.write_index)
    shards = next(iter(stats["indices"].values()))["shards"]
    return sum(len(copy["segments"]) for copies in shards.values() for copy in copies)


def sweep(
    url: str, alias: str, option: str, corpus: ScaleCorpus, truth: list[set[str]], ncs: list[int]
) -> dict[int, dict[str, float]]:
    out = {}
    for nc in ncs:
        store = open_store(url, alias, option, nc)
        store.ensure_index(corpus.encoder_id, corpus.vectors.shape[1])
        out[nc] = m = measure(store, corpus.query_vectors, truth)
        print(
            f"    num_candidates={nc:>4}: recall@10 {m['recall']:.3f}, "
            f"p50 {m['p50_ms']:.1f} ms, p95 {m['p95_ms']:.1f} ms",
            flush=True,
        )
        store.close()
    return out


def disk_usage(store: ElasticsearchVectorStore, index: str) -> dict[str, int]:
    """Bytes per field of ``index`` (``_disk_usage``; nested fields under their full name)."""
    response = store.client.perform_request(
        "POST", f"/{index}/_disk_usage", params={"run_expensive_tasks": "true"}
    )
    report = next(v for k, v in response.body.items() if k != "_shards")
    fields = {name: f["total_in_bytes"] for name, f in report["fields"].items()}
    return {"_total": report["store_size_in_bytes"], **fields}


def sizing(store: ElasticsearchVectorStore, corpus: ScaleCorpus) -> dict[str, float]:
    """Bytes per chunk of the chunk index, by part, and of the ledger index."""
    chunks = disk_usage(store, store.write_index)
    ledger_index = store._ledger()
    ledger = disk_usage(store, ledger_index) if ledger_index else {"_total": 0}
    n = len(corpus.chunks)
    vector = sum(v for k, v in chunks.items() if k.startswith("passages"))
    text = sum(v for k, v in chunks.items() if k.split(".")[0] in ("text", "_source"))
    recovery = chunks.get("_recovery_source", 0)  # pruned by merges after the retention lease
    windows = len(corpus.vectors) - n
    return {
        "total": chunks["_total"] / n,
        "vectors": vector / n,
        "per_vector": vector / len(corpus.vectors),
        "chunk_vector": vector / len(corpus.vectors),
        "windows": vector * windows / len(corpus.vectors) / n,
        "text": text / n,
        "recovery": recovery / n,
        "other": (chunks["_total"] - vector - text - recovery) / n,
        "ledger": ledger["_total"] / n,
        "fields": {k: v for k, v in chunks.items() if k != "_total"},
        "chunks": n,
    }


def settle(store: ElasticsearchVectorStore, timeout_s: float = 1800) -> None:
    """Wait until the node runs no merge on the index (its steady state)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = store.client.indices.stats(index=store.write_index, metric="merge")
        if stats["_all"]["primaries"]["merges"]["current"] == 0:
            return
        time.sleep(5)


def run(
    url: str,
    cache: Path,
    ncs: list[int],
    options: tuple[str, ...] = OPTIONS,
    force_merge: bool = False,
) -> dict:
    corpus = prepare(cache)
    windows = len(corpus.vectors) - len(corpus.chunks)
    print(
        f"scale corpus: {corpus.documents} documents, {len(corpus.chunks)} chunks, "
        f"{len(corpus.vectors)} vectors ({windows} window vectors), encoder {corpus.encoder_id}; "
        f"{len(corpus.queries)} held-out query sentences",
        flush=True,
    )
    truth = exact_top(corpus)
    results: dict[str, dict] = {}
    for option in options:
        alias = f"bench-scale-{uuid.uuid4().hex[:8]}"
        store = open_store(url, alias, option)
        store.ensure_index(corpus.encoder_id, corpus.vectors.shape[1])
        try:
            took = write_corpus(store, corpus)
            settle(store)
            print(
                f"  {option}: written in {took:.0f} s; merges done: {segments(store)} segments",
                flush=True,
            )
            figures = {"written": sweep(url, alias, option, corpus, truth, ncs)}
            if force_merge:
                started = time.perf_counter()
                store.client.options(request_timeout=3600).indices.forcemerge(
                    index=store.write_index, max_num_segments=1
                )
                took = time.perf_counter() - started
                print(f"  {option}: force-merged to 1 segment in {took:.0f} s", flush=True)
                figures["merged"] = sweep(url, alias, option, corpus, truth, ncs)
            results[option] = {**figures, "size": sizing(store, corpus)}
            print_size(option, results[option]["size"])
        finally:
            store.drop()
            store.close()
    print_defaults(results, ncs)
    return results


def print_size(option: str, s: dict) -> None:
    print(
        f"  {option} bytes per chunk: total {s['total']:.0f} = vectors "
        f"{s['vectors']:.0f} ({s['per_vector']:.0f} per vector: chunk vector "
        f"{s['chunk_vector']:.0f} + windows {s['windows']:.0f}) + text and _source "
        f"{s['text']:.0f} + _recovery_source (transient) {s['recovery']:.0f} + other fields "
        f"{s['other']:.0f}; ledger {s['ledger']:.0f}",
        flush=True,
    )
    fields = sorted(s["fields"].items(), key=lambda kv: -kv[1])
    print("    by field: " + ", ".join(f"{k} {v / s['chunks']:.0f}" for k, v in fields[:9]))


def cheapest(figures: dict, ncs: list[int]) -> int | None:
    """The smallest num_candidates meeting TARGET in every state measured."""
    states = [s for s in STATES if s in figures]
    return next((nc for nc in ncs if min(figures[s][nc]["recall"] for s in states) >= TARGET), None)


def print_defaults(results: dict, ncs: list[int]) -> None:
    picks = {option: cheapest(r, ncs) for option, r in results.items()}
    for option, nc in picks.items():
        if nc is None:
            print(f"  {option}: no num_candidates in {ncs} reaches recall@10 {TARGET}")
        else:
            m = results[option]["written"][nc]
            print(
                f"  {option}: smallest num_candidates with recall@10 >= {TARGET}: {nc} "
                f"(p50 {m['p50_ms']:.1f} ms, p95 {m['p95_ms']:.1f} ms, "
                f"{results[option]['size']['total']:.0f} bytes/chunk)"
            )
    ok = {o: nc for o, nc in picks.items() if nc is not None}
    if ok:
        best = min(ok, key=lambda o: results[o]["written"][ok[o]]["p50_ms"])
        print(f"defaults from these figures: index_options={best}, num_candidates={ok[best]}")
