"""One store contract, run against the embedded SQLite store always and against a live
Elasticsearch cluster when ``ELASTICSEARCH_URL`` is set (each live test gets its own alias and
deletes its indexes). Vectors are small deterministic unit vectors: the store is under test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from genai_ingest.config import ElasticsearchSettings, FusionSettings, SearchMode, Settings
from genai_ingest.failures.dlq import DeadLetterQueue, EntryStatus, Failure
from genai_ingest.failures.errors import EmbeddingRejected, ModelMismatch
from genai_ingest.models import (
    Chunk,
    DocStatus,
    DocumentRecord,
    EmbeddedChunk,
    chunk_id,
    sha256_hex,
)
from genai_ingest.stores.base import VectorStore, chunk_ids_digest
from genai_ingest.stores.sqlite import SQLiteVectorStore
from genai_ingest.stores.sqlite_dlq import SQLiteDeadLetterQueue

ES_URL = os.environ.get("ELASTICSEARCH_URL")
SKIP_REASON = "ELASTICSEARCH_URL not set: live Elasticsearch tests skipped"
MODEL = "contract-model"
DIM = 8
KINDS = ["sqlite", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)]


def es_settings(alias: str, **options) -> Settings:
    return Settings(store_url=ES_URL, elasticsearch=ElasticsearchSettings(index=alias, **options))


def unique_alias() -> str:
    return f"genai-ingest-test-{uuid.uuid4().hex[:12]}"


def open_es_store(alias: str, **options):
    from genai_ingest.stores.elasticsearch import ElasticsearchVectorStore

    return ElasticsearchVectorStore.from_settings(es_settings(alias, **options))


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "sqlite":
        sqlite_store = SQLiteVectorStore(tmp_path / "store.db")
        yield sqlite_store
        sqlite_store.close()
        return
    if not ES_URL:
        pytest.skip(SKIP_REASON)
    es_store = open_es_store(unique_alias())
    try:
        yield es_store
    finally:
        es_store.drop()
        es_store.close()


@pytest.fixture(params=KINDS)
def dlq(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeadLetterQueue]:
    if request.param == "sqlite":
        sqlite_dlq = SQLiteDeadLetterQueue(tmp_path / "store.db")
        yield sqlite_dlq
        sqlite_dlq.close()
        return
    if not ES_URL:
        pytest.skip(SKIP_REASON)
    from genai_ingest.stores.elasticsearch import ElasticsearchDeadLetterQueue

    es_dlq = ElasticsearchDeadLetterQueue.from_settings(es_settings(unique_alias()))
    try:
        yield es_dlq
    finally:
        es_dlq.drop()
        es_dlq.close()


def unit(*weights: float, dim: int = DIM) -> np.ndarray:
    """A unit vector with the given leading components."""
    vector = np.zeros(dim, np.float32)
    vector[: len(weights)] = weights
    return vector / np.linalg.norm(vector)


def basis(i: int, dim: int = DIM) -> np.ndarray:
    return unit(*([0.0] * i + [1.0]), dim=dim)


def make_chunk(
    doc_id: str,
    index: int,
    vector: np.ndarray,
    *,
    text: str | None = None,
    language: str = "en",
    band_keys: tuple[str, ...] = (),
) -> EmbeddedChunk:
    text = text or f"chunk {index} of {doc_id}"
    text_hash = sha256_hex(text)
    chunk = Chunk(
        chunk_id=chunk_id(doc_id, text_hash, 0),
        doc_id=doc_id,
        index=index,
        text=text,
        text_hash=text_hash,
        token_count=len(text.split()),
        metadata={
            "source": f"file:///{doc_id}.txt",
            "source_type": "file",
            "version": "v1",
            "parser": "text",
            "language": language,
            "format": "txt",
            "section": "intro",
        },
        signature=bytes([index, 1, 2, 3]),
        band_keys=list(band_keys),
    )
    return EmbeddedChunk(chunk=chunk, vector=vector)


def corpus() -> list[EmbeddedChunk]:
    return [
        make_chunk("doc-a", 0, basis(0), band_keys=("b0:x", "b1:y")),
        make_chunk("doc-a", 1, basis(1), language="de"),
        make_chunk("doc-b", 0, basis(2), band_keys=("b1:y",)),
        make_chunk("doc-c", 0, basis(3), language="fr"),
    ]


def ids(chunks: list[EmbeddedChunk]) -> set[str]:
    return {c.chunk.chunk_id for c in chunks}


def record(doc_id: str, **overrides) -> DocumentRecord:
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    values = {
        "doc_id": doc_id,
        "source": f"file:///{doc_id}.txt",
        "version": "v1",
        "status": DocStatus.INDEXED,
        "chunk_ids": ["c1", "c2"],
        "parser": "text",
        "language": "en",
        "text_hash": f"hash-{doc_id}",
        "signature": b"\x00\x01sig",
        "band_keys": [f"band-{doc_id}", "band-shared"],
        "created_at": at,
        "updated_at": at,
        "metadata": {"title": doc_id, "tags": ["a", "b"]},
    }
    return DocumentRecord(**{**values, **overrides})


@pytest.fixture
def filled(store: VectorStore) -> tuple[VectorStore, list[EmbeddedChunk]]:
    store.ensure_index(MODEL, DIM)
    chunks = corpus()
    assert store.upsert_chunks(chunks) == len(chunks)
    return store, chunks


# --- index identity -------------------------------------------------------------------------


def test_ensure_index_records_identity_and_refuses_another_model(store: VectorStore) -> None:
    assert store.index_identity() is None
    store.ensure_index(MODEL, DIM)
    store.ensure_index(MODEL, DIM)
    assert store.index_identity() == (MODEL, DIM)
    with pytest.raises(ModelMismatch):
        store.ensure_index("another-model", DIM)
    with pytest.raises(ModelMismatch):
        store.ensure_index(MODEL, DIM * 2)


def test_upsert_refuses_vectors_of_another_dimension(store: VectorStore) -> None:
    store.ensure_index(MODEL, DIM)
    with pytest.raises(ModelMismatch):
        store.upsert_chunks([make_chunk("doc-x", 0, basis(0, dim=DIM * 2))])


# --- chunks ---------------------------------------------------------------------------------


def test_upsert_is_idempotent_by_id(filled) -> None:
    store, chunks = filled
    before = store.stats()
    store.upsert_chunks(chunks)
    after = store.stats()
    assert after.chunks == before.chunks == len(chunks)
    assert after.chunk_ids_sha256 == before.chunk_ids_sha256


def test_stats_digest_is_the_digest_of_the_chunk_ids(filled) -> None:
    store, chunks = filled
    store.put_document(record("doc-a"))
    store.put_document(record("doc-dup", status=DocStatus.DUPLICATE))
    stats = store.stats()
    assert stats.chunk_ids_sha256 == chunk_ids_digest(ids(chunks))
    assert (stats.chunks, stats.documents) == (len(chunks), 1)
    assert (stats.model_id, stats.dimension) == (MODEL, DIM)


def test_delete_chunks_by_id_counts_the_existing_ones(filled) -> None:
    store, chunks = filled
    gone = chunks[0].chunk.chunk_id
    assert store.delete_chunks([gone, "no-such-chunk"]) == 1
    assert store.delete_chunks([gone]) == 0
    assert store.stats().chunk_ids_sha256 == chunk_ids_digest(ids(chunks) - {gone})


def test_chunk_ids_of_a_document(filled) -> None:
    store, chunks = filled
    assert store.chunk_ids_of("doc-a") == ids([c for c in chunks if c.chunk.doc_id == "doc-a"])
    assert store.chunk_ids_of("unknown") == set()


def test_find_chunks_by_text_hash_and_band_key(filled) -> None:
    store, chunks = filled
    by_hash = store.find_chunks(text_hashes=[chunks[3].chunk.text_hash])
    assert [(c.chunk_id, c.doc_id, c.signature, c.source) for c in by_hash] == [
        (chunks[3].chunk.chunk_id, "doc-c", chunks[3].chunk.signature, "file:///doc-c.txt")
    ]
    by_band = store.find_chunks(band_keys=["b1:y"])
    assert {c.chunk_id for c in by_band} == ids([chunks[0], chunks[2]])
    both = store.find_chunks(text_hashes=[chunks[0].chunk.text_hash], band_keys=["b0:x"])
    assert [c.chunk_id for c in both] == [chunks[0].chunk.chunk_id]
    assert store.find_chunks() == []


# --- search ---------------------------------------------------------------------------------


def test_search_returns_the_nearest_chunk_first(filled) -> None:
    store, chunks = filled
    hits = store.search(unit(0.0, 1.0, 0.3), k=2)
    assert [h.chunk_id for h in hits] == [chunks[1].chunk.chunk_id, chunks[2].chunk.chunk_id]
    top = hits[0]
    assert (top.doc_id, top.source, top.text) == (
        "doc-a",
        "file:///doc-a.txt",
        chunks[1].chunk.text,
    )
    assert top.metadata["language"] == "de"
    assert top.score == pytest.approx(float(unit(0.0, 1.0, 0.3) @ basis(1)), abs=0.05)


def test_search_honours_filters(filled) -> None:
    store, chunks = filled
    query = unit(1.0, 1.0, 1.0, 1.0)
    assert {h.doc_id for h in store.search(query, k=4, filters={"doc_id": "doc-b"})} == {"doc-b"}
    german = store.search(query, k=4, filters={"language": "de"})
    assert [h.chunk_id for h in german] == [chunks[1].chunk.chunk_id]
    either = store.search(query, k=4, filters={"language": ["de", "fr"], "format": "txt"})
    assert {h.chunk_id for h in either} == ids([chunks[1], chunks[3]])
    assert store.search(query, k=4, filters={"doc_id": "nothing"}) == []
    with pytest.raises(ValueError):
        store.search(query, filters={"text": "x"})


def with_windows(item: EmbeddedChunk, *vectors: np.ndarray) -> EmbeddedChunk:
    """The chunk with one sentence window per vector."""
    texts = [f"window {i} of {item.chunk.chunk_id}" for i in range(len(vectors))]
    chunk = replace(item.chunk, window_texts=texts)
    return EmbeddedChunk(chunk=chunk, vector=item.vector, window_vectors=np.stack(vectors))


def test_search_scores_best_window(store: VectorStore) -> None:
    """A chunk scores the best of its vectors: its window near the query outranks a chunk
    whose whole vector is nearer than the first chunk's whole vector; hits stay distinct."""
    store.ensure_index(MODEL, DIM)
    query = unit(0.0, 0.0, 1.0, 0.0, 0.6)
    windowed = with_windows(make_chunk("doc-w", 0, basis(0)), basis(2), unit(0.0, 0.0, 1.0, 0.3))
    plain = make_chunk("doc-p", 0, basis(4))
    assert float(query @ basis(0)) < float(query @ basis(4)) < float(query @ basis(2))
    store.upsert_chunks([windowed, plain])
    hits = store.search(query, k=2)
    assert [h.chunk_id for h in hits] == [windowed.chunk.chunk_id, plain.chunk.chunk_id]
    assert hits[0].text == windowed.chunk.text
    assert hits[0].score == pytest.approx(float(query @ basis(2)), abs=0.05)
    assert store.stats().chunks == 2
    only = store.search(query, k=2, filters={"doc_id": "doc-p"})
    assert [h.chunk_id for h in only] == [plain.chunk.chunk_id]

    store.upsert_chunks([make_chunk("doc-w", 0, basis(0))])  # re-upsert drops the windows
    assert [h.chunk_id for h in store.search(query, k=2)] == [
        plain.chunk.chunk_id,
        windowed.chunk.chunk_id,
    ]
    with pytest.raises(ModelMismatch):
        store.upsert_chunks([with_windows(plain, basis(1, dim=DIM * 2))])


# --- lexical and hybrid search ----------------------------------------------------------------

#: Texts and vectors where BM25 and the vectors disagree: the dense ranking of ``QUERY_VECTOR``
#: is t0, t1, t2, ..., the words of ``QUERY_TEXT`` are rare in t3 and t5 only.
TEXTS = [
    "the ledger row is written last, after the chunks",
    "chunks are upserted by id and stale ids deleted",
    "a crash at any point converges to the clean run",
    "the assignee of the patent is the Remington company",
    "vectors are cached by model and text hash",
    "the patent was filed in 1868 by the inventors",
    "claims expire and are taken over by other workers",
]
QUERY_VECTOR = unit(*(1.0 / (i + 1) for i in range(len(TEXTS))))
QUERY_TEXT = "patent assignee"


def ranked_corpus() -> list[EmbeddedChunk]:
    return [
        make_chunk(f"doc-{i}", 0, basis(i), text=text, language="de" if i == 5 else "en")
        for i, text in enumerate(TEXTS)
    ]


def ranking(store: VectorStore, mode: SearchMode, k: int = 4, **kw) -> list[str]:
    hits = store.search(QUERY_VECTOR, k=k, text=QUERY_TEXT, mode=mode, **kw)
    return [h.doc_id for h in hits]


def test_lexical_search_ranks_by_bm25_and_honours_filters(store: VectorStore) -> None:
    store.ensure_index(MODEL, DIM)
    store.upsert_chunks(ranked_corpus())
    assert ranking(store, SearchMode.LEXICAL) == ["doc-3", "doc-5"]  # both words, then one
    assert ranking(store, SearchMode.LEXICAL, filters={"language": "de"}) == ["doc-5"]
    hits = store.search(None, k=2, text="Remington", mode=SearchMode.LEXICAL)
    assert [h.doc_id for h in hits] == ["doc-3"] and hits[0].score > 0
    assert store.search(None, text="?!", mode=SearchMode.LEXICAL) == []  # no word to match
    with pytest.raises(ValueError):
        store.search(QUERY_VECTOR, mode=SearchMode.LEXICAL)  # no query text


def test_hybrid_search_fuses_the_two_rankings(store: VectorStore) -> None:
    """RRF (rrf_k 10) over the dense ranking (doc-0, doc-1, ..., doc-6) and BM25's
    (doc-3, doc-5): doc-3 = 1/14 + 1/11 beats doc-0 = 1/11; doc-5 = 1/16 + 1/12 beats doc-1."""
    store.ensure_index(MODEL, DIM)
    store.upsert_chunks(ranked_corpus())
    assert ranking(store, SearchMode.DENSE) == ["doc-0", "doc-1", "doc-2", "doc-3"]
    hits = store.search(QUERY_VECTOR, k=4, text=QUERY_TEXT, mode=SearchMode.HYBRID)
    assert [h.doc_id for h in hits] == ["doc-3", "doc-5", "doc-0", "doc-1"]
    assert [h.score for h in hits] == pytest.approx(
        [1 / 14 + 1 / 11, 1 / 16 + 1 / 12, 1 / 11, 1 / 12]
    )
    assert hits[0].text == TEXTS[3] and hits[0].metadata["language"] == "en"
    lexical_heavy = FusionSettings(dense_weight=0.2)
    assert ranking(store, SearchMode.HYBRID, fusion=lexical_heavy)[:2] == ["doc-3", "doc-5"]
    dense_only = FusionSettings(lexical_weight=0.0)
    assert ranking(store, SearchMode.HYBRID, fusion=dense_only) == ranking(store, SearchMode.DENSE)
    english = ranking(store, SearchMode.HYBRID, filters={"language": "en"})
    assert english == ["doc-3", "doc-0", "doc-1", "doc-2"]


def test_lexical_index_follows_upserts_and_deletes(store: VectorStore) -> None:
    store.ensure_index(MODEL, DIM)
    chunks = ranked_corpus()
    store.upsert_chunks(chunks)
    store.upsert_chunks(chunks)  # a repeat indexes nothing twice
    assert ranking(store, SearchMode.LEXICAL) == ["doc-3", "doc-5"]
    store.delete_chunks([chunks[3].chunk.chunk_id])
    assert ranking(store, SearchMode.LEXICAL) == ["doc-5"]
    renamed = make_chunk("doc-5", 0, basis(5), text="filed in 1868 by the inventors")
    renamed.chunk.chunk_id = chunks[5].chunk.chunk_id  # same id, new text: an overwrite
    store.upsert_chunks([renamed])
    assert ranking(store, SearchMode.LEXICAL) == []
    assert (
        store.search(None, text="inventors", mode=SearchMode.LEXICAL)[0].text == renamed.chunk.text
    )


@pytest.mark.elasticsearch
def test_both_stores_rank_the_same_hits_the_same_way(tmp_path: Path) -> None:
    """The same chunks in SQLite and Elasticsearch: the same top hits, in the same order, for
    every mode, with and without a filter."""
    if not ES_URL:
        pytest.skip(SKIP_REASON)
    sqlite_store = SQLiteVectorStore(tmp_path / "store.db")
    es_store = open_es_store(unique_alias())
    try:
        for each in (sqlite_store, es_store):
            each.ensure_index(MODEL, DIM)
            each.upsert_chunks(ranked_corpus())
        queries = [
            (QUERY_TEXT, QUERY_VECTOR),
            ("the chunks", unit(*(i + 1.0 for i in range(len(TEXTS))))),  # doc-6 first
            ("1868 inventors", unit(*((3 * i) % 7 + 1.0 for i in range(len(TEXTS))))),
        ]
        for mode in SearchMode:
            for text, vector in queries:
                for filters in (None, {"language": "en"}):
                    both = [
                        [h.chunk_id for h in s.search(vector, 5, filters, text=text, mode=mode)]
                        for s in (sqlite_store, es_store)
                    ]
                    assert both[0] == both[1], (mode, text, filters)
    finally:
        sqlite_store.close()
        es_store.drop()
        es_store.close()


# --- ledger ---------------------------------------------------------------------------------


def test_ledger_put_get_iter_delete(store: VectorStore) -> None:
    store.ensure_index(MODEL, DIM)
    assert store.get_document("doc-a") is None
    first, second = record("doc-b"), record("doc-a", metadata={"x": 1})
    store.put_document(first)
    store.put_document(second)
    assert store.get_document("doc-b") == first
    assert [r.doc_id for r in store.iter_documents()] == ["doc-a", "doc-b"]
    updated = record("doc-b", version="v2", chunk_ids=["c3"])
    store.put_document(updated)
    assert store.get_document("doc-b") == updated
    store.delete_document("doc-b")
    store.delete_document("doc-b")
    assert [r.doc_id for r in store.iter_documents()] == ["doc-a"]


def test_find_documents_by_text_hash_and_band_key(store: VectorStore) -> None:
    store.ensure_index(MODEL, DIM)
    store.put_document(record("doc-a"))
    store.put_document(record("doc-b", text_hash="other"))
    store.put_document(record("doc-f", status=DocStatus.FAILED, text_hash="hash-doc-a"))
    assert [r.doc_id for r in store.find_documents(text_hash="hash-doc-a")] == ["doc-a"]
    shared = store.find_documents(band_keys=["band-shared"])
    assert sorted(r.doc_id for r in shared) == ["doc-a", "doc-b"]
    assert [r.doc_id for r in store.find_documents(band_keys=["band-doc-b"])] == ["doc-b"]
    assert store.find_documents() == []


# --- DLQ ------------------------------------------------------------------------------------


def failure(doc_id: str, stage: str = "parse", error_class: str = "corrupt") -> Failure:
    return Failure(
        doc_id=doc_id,
        source=f"file:///{doc_id}.pdf",
        stage=stage,
        error_class=error_class,
        error_kind="permanent",
        reason="broken xref table",
        traceback="Traceback ...",
        version="v1",
        parsers_tried=["docling"],
    )


def test_dlq_put_twice_counts_attempts_and_keeps_raw_bytes(dlq: DeadLetterQueue) -> None:
    raw = bytes(range(256)) * 4
    dlq.put(failure("doc-1"), raw)
    entry = dlq.put(failure("doc-1", stage="embed", error_class="endpoint_unavailable"), None)
    assert entry.attempts == 2
    stored = dlq.get("doc-1")
    assert stored is not None
    assert (stored.attempts, stored.stage, len(stored.history)) == (2, "embed", 2)
    assert stored.raw_sha256 == sha256_hex(raw)
    assert dlq.raw("doc-1") == raw
    assert dlq.raw("missing") is None


def test_dlq_resolve_discard_filters_and_overrides(dlq: DeadLetterQueue) -> None:
    dlq.put(failure("doc-1"), None)
    dlq.put(failure("doc-2", stage="embed", error_class="endpoint_unavailable"), b"x")
    dlq.put(failure("doc-3"), None)
    dlq.resolve("doc-1", "replayed")
    dlq.discard("doc-3", "not wanted")
    resolved = dlq.get("doc-1")
    assert resolved is not None and resolved.status is EntryStatus.RESOLVED
    assert resolved.resolution == "replayed" and len(resolved.history) == 2
    assert [e.entry_id for e in dlq.entries()] == ["doc-2"]
    assert [e.entry_id for e in dlq.entries(status=None)] == ["doc-1", "doc-2", "doc-3"]
    assert [e.entry_id for e in dlq.entries(status=EntryStatus.DISCARDED)] == ["doc-3"]
    assert [e.entry_id for e in dlq.entries(status=None, stage="parse")] == ["doc-1", "doc-3"]
    assert [e.entry_id for e in dlq.entries(error_class="endpoint_unavailable")] == ["doc-2"]
    dlq.set_overrides("doc-2", {"language": "en"})
    dlq.set_overrides("doc-2", {"parser": "text"})
    entry = dlq.get("doc-2")
    assert entry is not None and entry.overrides == {"language": "en", "parser": "text"}
    with pytest.raises(KeyError):
        dlq.resolve("missing", "x")


# --- Elasticsearch only: generations, hybrid search, rejections ------------------------------


@pytest.fixture
def es_store() -> Iterator:
    if not ES_URL:
        pytest.skip(SKIP_REASON)
    es_store = open_es_store(unique_alias())
    try:
        yield es_store
    finally:
        es_store.drop()
        es_store.close()


@pytest.mark.elasticsearch
def test_model_change_builds_a_new_generation_then_swaps_the_alias(es_store) -> None:
    es_store.ensure_index(MODEL, DIM)
    old = es_store.write_index
    es_store.upsert_chunks([make_chunk("doc-old", 0, basis(0))])
    new = es_store.begin_reindex("new-model", 16)
    assert new != old and es_store.live_index() == old
    worker = open_es_store(es_store.alias)
    worker.ensure_index("new-model", 16)
    assert worker.write_index == new
    worker.upsert_chunks([make_chunk("doc-new", 0, basis(0, dim=16))])
    worker.put_document(record("doc-new"))
    es_store.client.indices.refresh(index=[old, new])  # both visible: only the alias decides
    live = es_store.client.search(index=es_store.alias, query={"match_all": {}})
    assert [h["_source"]["doc_id"] for h in live["hits"]["hits"]] == ["doc-old"]
    assert es_store.swap_alias(delete_previous=True) == new
    assert es_store.live_index() == new
    assert open_es_store(es_store.alias).get_document("doc-new") is not None
    with pytest.raises(ModelMismatch):
        open_es_store(es_store.alias).ensure_index(MODEL, DIM)
    worker.close()


@pytest.mark.elasticsearch
def test_delete_by_query(es_store) -> None:
    es_store.ensure_index(MODEL, DIM)
    es_store.upsert_chunks(corpus())
    assert es_store.delete_chunks_of("doc-a") == 2
    assert es_store.chunk_ids_of("doc-a") == set()


@pytest.mark.elasticsearch
def test_a_vector_the_mapping_refuses_is_a_permanent_error(es_store) -> None:
    es_store.ensure_index(MODEL, DIM)
    not_unit = np.full(DIM, 3.0, np.float32)  # dot_product needs unit-length vectors
    with pytest.raises(EmbeddingRejected):
        es_store.upsert_chunks([make_chunk("doc-bad", 0, not_unit)])
