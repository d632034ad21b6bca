"""Multi-vector chunks on a live Elasticsearch node: a chunk's vectors (its own and its
sentence windows') are nested ``passages``; kNN scores a chunk by its best passage, returns
distinct chunks, filters on the chunk's fields, and fuses with BM25. An index of the older
single-vector schema keeps answering searches but is never written: it is rebuilt as a new
generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genai_ingest.config import ElasticsearchSettings, SearchMode
from genai_ingest.failures.errors import ModelMismatch
from genai_ingest.models import EmbeddedChunk
from genai_ingest.stores.es_mapping import (
    index_mapping,
    ledger_mapping,
    ledger_name,
    physical_index_name,
)
from tests.es_live import es_client, open_es_store, require_es
from tests.test_store_contract import basis, make_chunk, unit

pytestmark = pytest.mark.elasticsearch

MODEL, DIM = "model-a", 8


def windowed(doc_id: str, vector: np.ndarray, *windows: np.ndarray, **kw: Any) -> EmbeddedChunk:
    item = make_chunk(doc_id, 0, vector, **kw)
    item.window_vectors = np.stack(windows) if windows else None
    return item


def test_a_chunk_scores_by_its_best_window_and_comes_back_once(alias: str, tmp_path: Path) -> None:
    store = open_es_store(alias, tmp_path)
    store.ensure_index(MODEL, DIM)
    store.upsert_chunks(
        [
            windowed("doc-w", basis(0), basis(1), basis(2), unit(0, 1, 1)),
            make_chunk("doc-1", 0, unit(0.6, 1.0)),  # no windows: one vector, as before
            windowed("doc-3", basis(4), basis(3), language="de"),
        ]
    )
    hits = store.search(basis(1), k=3)
    assert [h.doc_id for h in hits] == ["doc-w", "doc-1", "doc-3"]  # distinct chunks
    assert hits[0].score == pytest.approx(1.0, abs=0.02)  # the window's score, not the chunk's
    assert hits[1].score == pytest.approx(float(unit(0.6, 1.0) @ basis(1)), abs=0.02)
    assert "passages" not in hits[0].metadata
    german = store.search(basis(3), k=3, filters={"language": "de"})
    assert [(h.doc_id, round(h.score, 1)) for h in german] == [("doc-3", 1.0)]
    assert [h.doc_id for h in store.search(basis(2), k=1)] == ["doc-w"]

    store.upsert_chunks([make_chunk("doc-w", 0, basis(5))])  # re-upsert: windows replaced
    assert store.search(basis(2), k=3)[0].doc_id != "doc-w"
    assert store.stats().chunks == 3


def test_hybrid_search_fuses_bm25_with_the_nested_knn(alias: str, tmp_path: Path) -> None:
    store = open_es_store(alias, tmp_path)
    store.ensure_index(MODEL, DIM)
    store.upsert_chunks(
        [
            windowed("doc-a", basis(0), basis(6), text="ledger rows are written last"),
            windowed(
                "doc-z",
                basis(1),
                unit(0, 0, 1, 0, 0, 0, 0.3),
                text="zebra crossing rules for pedestrians",
            ),
            make_chunk("doc-m", 0, basis(4), text="the alias moves atomically"),
        ]
    )
    hits = store.search(basis(6), k=2, text="zebra pedestrians", mode=SearchMode.HYBRID)
    # doc-a: first by its window (dense rank 1); doc-z: dense rank 2 and the only BM25 match
    assert [h.doc_id for h in hits] == ["doc-z", "doc-a"]
    assert [h.score for h in hits] == pytest.approx([1 / 12 + 1 / 11, 1 / 11])  # rrf_k 10


def create_schema_2_generation(alias: str) -> str:
    """A chunk index as the previous schema built it: one top-level ``vector``."""
    mapping = index_mapping(MODEL, DIM, ElasticsearchSettings())
    mapping["properties"]["vector"] = mapping["properties"].pop("passages")["properties"]["vector"]
    mapping["_meta"]["schema"] = 2
    mapping["_source"] = {"excludes": ["vector"]}
    index = physical_index_name(alias, 1, MODEL, DIM)
    client = es_client(require_es())
    try:
        client.indices.create(index=index, mappings=mapping)
        client.indices.create(index=ledger_name(index), mappings=ledger_mapping())
        old = make_chunk("doc-old", 0, basis(0))
        source = {"doc_id": "doc-old", "source": "file:///old.txt", "text": old.chunk.text}
        client.index(index=index, id=old.chunk.chunk_id, document={**source, "vector": basis(0)})
        client.indices.refresh(index=index)
        client.indices.put_alias(index=index, name=alias)
        client.indices.put_alias(index=ledger_name(index), name=ledger_name(alias))
    finally:
        client.close()
    return index


def test_an_older_schema_is_searched_but_rebuilt_as_a_new_generation(
    alias: str, tmp_path: Path
) -> None:
    old_index = create_schema_2_generation(alias)
    store = open_es_store(alias, tmp_path)
    with pytest.raises(ModelMismatch, match="schema 2"):
        store.ensure_index(MODEL, DIM)
    assert [h.doc_id for h in store.search(basis(0), k=3)] == ["doc-old"]  # still answers

    rebuild = open_es_store(alias, tmp_path)
    new_index = rebuild.begin_reindex(MODEL, DIM)
    assert new_index != old_index
    worker = open_es_store(alias, tmp_path)
    worker.ensure_index(MODEL, DIM)  # finds the pending generation of the current schema
    assert worker.write_index == new_index
    worker.upsert_chunks([windowed("doc-new", basis(3), basis(0))])
    assert [h.doc_id for h in store.search(basis(0), k=3)] == ["doc-old"]  # not yet live
    assert rebuild.swap_alias(delete_previous=True) == new_index
    after = open_es_store(alias, tmp_path)
    after.ensure_index(MODEL, DIM)
    assert [h.doc_id for h in after.search(basis(0), k=3)] == ["doc-new"]
