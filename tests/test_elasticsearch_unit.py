"""Pure functions of the Elasticsearch store: no cluster, no client, no mocks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from genai_ingest.config import ElasticsearchSettings, Settings
from genai_ingest.failures.errors import (
    EmbeddingRejected,
    ErrorKind,
    ModelMismatch,
    StoreUnavailable,
    SystemFault,
)
from genai_ingest.failures.redact import redact
from genai_ingest.models import Chunk, DocStatus, DocumentRecord, EmbeddedChunk
from genai_ingest.stores.base import chunk_fields
from genai_ingest.stores.elasticsearch import (
    SCHEMA_VERSION,
    api_error,
    bulk_kwargs,
    chunk_source,
    classify_item_error,
    client_from_settings,
    compat_mimetype,
    delete_actions,
    generation_of,
    index_mapping,
    ledger_mapping,
    ledger_name,
    model_slug,
    physical_index_name,
    raw_similarity,
    record_from_source,
    record_source,
    upsert_actions,
)
from genai_ingest.stores.es_bulk import vectors_fit
from genai_ingest.stores.es_client import server_major
from genai_ingest.stores.es_mapping import (
    LEGACY_VECTOR_FIELD,
    VECTOR_FIELD,
    check_writable,
    vector_field,
)
from genai_ingest.stores.es_search import knn_clause


def embedded(
    chunk_id: str,
    dim: int = 4,
    vector: np.ndarray | None = None,
    windows: np.ndarray | None = None,
) -> EmbeddedChunk:
    chunk = Chunk(
        chunk_id=chunk_id,
        doc_id="doc",
        index=0,
        text="some text",
        text_hash="h",
        token_count=2,
        metadata={"source": "file:///doc.txt", "language": "en"},
        signature=b"\x01\x02",
        band_keys=["b1", "b2"],
    )
    if vector is None:
        vector = np.full(dim, 1 / np.sqrt(dim), np.float32)
    return EmbeddedChunk(chunk=chunk, vector=vector, window_vectors=windows)


def passage_mapping(mapping: dict) -> dict:
    """The dense_vector mapping inside the nested ``passages`` field."""
    passages = mapping["properties"]["passages"]
    assert passages["type"] == "nested" and VECTOR_FIELD == "passages.vector"
    return passages["properties"]["vector"]


# --- mapping ----------------------------------------------------------------------------------


def test_mapping_records_the_vector_field_and_identity() -> None:
    es = ElasticsearchSettings()
    mapping = index_mapping("BAAI/bge-small", 384, es)
    vector = passage_mapping(mapping)
    assert vector == {
        "type": "dense_vector",
        "dims": 384,
        "index": True,
        "similarity": "dot_product",
        "index_options": {"type": "int8_hnsw"},
    }
    assert mapping["_source"] == {"excludes": ["passages"]}
    assert mapping["_meta"]["schema"] == SCHEMA_VERSION == 3
    assert mapping["_meta"]["model_id"] == "BAAI/bge-small"
    assert mapping["_meta"]["dimension"] == 384
    assert mapping["dynamic"] == "strict"


@pytest.mark.parametrize("options", ["bbq_hnsw", "hnsw", "flat", "int8_flat"])
@pytest.mark.parametrize("similarity", ["cosine", "l2_norm", "max_inner_product"])
def test_mapping_takes_index_options_and_similarity(options: str, similarity: str) -> None:
    es = ElasticsearchSettings(index_options=options, similarity=similarity)
    vector = passage_mapping(index_mapping("m", 768, es))
    assert (vector["index_options"], vector["similarity"]) == ({"type": options}, similarity)


def test_mapping_types_every_stored_chunk_field() -> None:
    properties = index_mapping("m", 4, ElasticsearchSettings())["properties"]
    source = chunk_source(embedded("c1"))
    assert set(source) == set(properties)
    for name in ("doc_id", "source", "language", "text_hash", "band_keys", "section"):
        assert properties[name] == {"type": "keyword"}
    assert properties["text"] == {"type": "text"}
    assert properties["chunk_index"] == {"type": "integer"}


def test_ledger_mapping_stores_the_record_unindexed() -> None:
    properties = ledger_mapping()["properties"]
    assert properties["record"] == {"type": "object", "enabled": False}
    assert properties["band_keys"] == {"type": "keyword"}


# --- names ------------------------------------------------------------------------------------


def test_index_names_are_versioned_behind_the_alias() -> None:
    name = physical_index_name("rag", 3, "sentence-transformers/all-MiniLM-L6-v2", 384)
    assert name == "rag-v3-sentence-transformers-all-minilm-l6-v2-384"
    assert generation_of("rag", name) == 3
    assert generation_of("rag", ledger_name(name)) is None
    assert generation_of("rag", "rag-dlq") is None
    assert generation_of("other", name) is None
    assert model_slug("///") == "model"


# --- bulk actions -----------------------------------------------------------------------------


def test_upsert_actions_use_the_chunk_id_and_carry_the_vector() -> None:
    chunks = [embedded("c1"), embedded("c2")]
    actions = list(upsert_actions("idx-v1", chunks))
    assert [(a["_op_type"], a["_index"], a["_id"]) for a in actions] == [
        ("index", "idx-v1", "c1"),
        ("index", "idx-v1", "c2"),
    ]
    source = actions[0]["_source"]
    assert [p["vector"] for p in source["passages"]] == [pytest.approx([0.5] * 4)]
    assert source["signature"] == "AQI="
    assert {k: source[k] for k in chunk_fields(chunks[0])} == chunk_fields(chunks[0])
    json.dumps(actions)  # serialisable as-is


def test_citation_fields_are_written_typed_and_null_when_unknown() -> None:
    item = embedded("c1")
    assert {k: chunk_source(item)[k] for k in ("page_start", "page_end", "headings")} == {
        "page_start": None,
        "page_end": None,
        "headings": [],
    }
    item.chunk.metadata.update(page_start=3, page_end="4", headings=("Part I", "Scope"))
    source = chunk_source(item)
    assert (source["page_start"], source["page_end"]) == (3, 4)
    assert source["headings"] == ["Part I", "Scope"]
    mapping = index_mapping("m", 4, ElasticsearchSettings())["properties"]
    assert (mapping["page_start"]["type"], mapping["headings"]["type"]) == ("integer", "keyword")
    assert set(source) <= set(mapping)


def test_a_chunk_writes_one_passage_per_vector_its_own_first() -> None:
    windows = np.eye(4, dtype=np.float32)[:2]
    source = chunk_source(embedded("c1", windows=windows))
    rows = [p["vector"] for p in source["passages"]]
    assert rows == [pytest.approx([0.5] * 4), [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
    empty = chunk_source(embedded("c2", windows=np.zeros((0, 4), np.float32)))
    assert len(empty["passages"]) == 1  # no windows: exactly today's single vector


@pytest.mark.parametrize("where", ["chunk", "window"])
def test_upsert_actions_refuse_non_finite_vectors(where: str) -> None:
    bad_row = np.array([np.nan, 0, 0, np.inf], np.float32)
    if where == "chunk":
        bad = embedded("c1", vector=bad_row)
    else:
        bad = embedded("c1", windows=np.stack([np.eye(4, dtype=np.float32)[0], bad_row]))
    with pytest.raises(EmbeddingRejected):
        list(upsert_actions("idx", [bad]))


def test_dimension_checks_cover_every_window_vector() -> None:
    assert vectors_fit(embedded("c1"), 4)
    assert vectors_fit(embedded("c1", windows=np.eye(4, dtype=np.float32)), 4)
    assert vectors_fit(embedded("c1", windows=np.zeros((0, 4), np.float32)), 4)
    assert not vectors_fit(embedded("c1", dim=8), 4)
    assert not vectors_fit(embedded("c1", windows=np.eye(8, dtype=np.float32)), 4)


def test_an_index_of_another_schema_is_read_but_not_written() -> None:
    current = index_mapping("m", 4, ElasticsearchSettings())["_meta"]
    check_writable("idx", current, "m", 4)
    old = {**current, "schema": 2}
    with pytest.raises(ModelMismatch, match="schema 2"):
        check_writable("idx", old, "m", 4)
    with pytest.raises(ModelMismatch, match="refusing other"):
        check_writable("idx", current, "other", 4)
    with pytest.raises(ModelMismatch):
        check_writable("idx", {}, "m", 4)  # an index we did not create
    assert (vector_field(current), vector_field(old)) == (VECTOR_FIELD, LEGACY_VECTOR_FIELD)
    knn = knn_clause(np.ones(4), 3, 100, [{"term": {"doc_id": "d"}}], vector_field(old))
    assert (knn["field"], knn["k"], knn["filter"]) == ("vector", 3, [{"term": {"doc_id": "d"}}])


def test_delete_actions_are_by_id_without_duplicates() -> None:
    actions = list(delete_actions("idx", ["a", "b", "a"]))
    assert actions == [
        {"_op_type": "delete", "_index": "idx", "_id": "a"},
        {"_op_type": "delete", "_index": "idx", "_id": "b"},
    ]


def test_bulk_batches_are_bounded_by_count_and_bytes() -> None:
    es = ElasticsearchSettings(bulk_max_docs=200, bulk_max_bytes=5_000_000)
    options = bulk_kwargs(es)
    assert (options["chunk_size"], options["max_chunk_bytes"]) == (200, 5_000_000)
    assert options["raise_on_error"] is False  # per-item errors are classified, not raised
    assert options["max_retries"] == 0  # 429s go through the jittered store-write policy
    assert "refresh" not in options  # the store refreshes before it reads, not per write
    one = next(upsert_actions("idx", [embedded("c1", dim=384)]))
    assert len(json.dumps(one)) < 20_000  # a 384-dim chunk: ~250 fit in the default 10 MiB


# --- error classification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        {"type": "mapper_parsing_exception", "reason": "failed to parse"},
        {
            "type": "document_parsing_exception",
            "reason": "[1:40] failed to parse: The [dims] of vector differs",
            "caused_by": {"type": "illegal_argument_exception", "reason": "dims 8 != 16"},
        },
        {"type": "strict_dynamic_mapping_exception", "reason": "mapping set to strict"},
        {"type": "illegal_argument_exception", "reason": "unit-length vectors only"},
    ],
)
def test_mapping_and_dimension_errors_are_permanent(error: dict) -> None:
    classified = classify_item_error(400, error)
    assert isinstance(classified, EmbeddingRejected)
    assert classified.kind is ErrorKind.PERMANENT
    assert error["type"] in classified.reason


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, {"type": "es_rejected_execution_exception", "reason": "queue full"}),
        (503, {"type": "unavailable_shards_exception", "reason": "primary not active"}),
        (500, {"type": "illegal_argument_exception", "reason": "node shutting down"}),
        (409, {"type": "version_conflict_engine_exception", "reason": "conflict"}),
        (400, "a plain string error"),
    ],
)
def test_other_item_errors_are_transient(status: int, error: dict | str) -> None:
    classified = classify_item_error(status, error)
    assert isinstance(classified, StoreUnavailable)
    assert classified.kind is ErrorKind.TRANSIENT


def test_connection_failures_are_store_unavailable() -> None:
    from elastic_transport import ConnectionError as TransportConnectionError

    error = api_error(TransportConnectionError("refused"), "bulk")
    assert isinstance(error, StoreUnavailable)
    assert not isinstance(error, SystemFault)


# --- client and responses ---------------------------------------------------------------------


def test_compat_headers_pin_the_rest_api_major() -> None:
    assert compat_mimetype("application/json", 8) == (
        "application/vnd.elasticsearch+json; compatible-with=8"
    )
    assert compat_mimetype("application/x-ndjson", 9) == (
        "application/vnd.elasticsearch+x-ndjson; compatible-with=9"
    )
    assert compat_mimetype("text/plain", 8) == "text/plain"


def test_server_major_is_the_lowest_node_version() -> None:
    nodes = {"nodes": {"a": {"version": "9.5.4"}, "b": {"version": "8.19.21"}}}
    assert server_major(nodes) == 8


def test_client_construction_registers_credentials_for_redaction() -> None:
    settings = Settings(
        store_url="https://ingest:url-pass-123@es.example:9200",
        elasticsearch=ElasticsearchSettings(api_key="key-abc-123"),
    )
    client = client_from_settings(settings)  # no request is sent
    client.close()
    assert redact("key-abc-123 and url-pass-123") == "*** and ***"


@pytest.mark.parametrize("similarity", ["dot_product", "cosine", "l2_norm", "max_inner_product"])
@pytest.mark.parametrize("dot", [-0.8, 0.0, 0.35, 1.0])
def test_knn_scores_map_back_to_the_dot_product(similarity: str, dot: float) -> None:
    es_score = {
        "dot_product": (1 + dot) / 2,
        "cosine": (1 + dot) / 2,
        "l2_norm": 1 / (1 + (2 - 2 * dot)),
        "max_inner_product": 1 / (1 - dot) if dot < 0 else dot + 1,
    }[similarity]
    assert raw_similarity(es_score, similarity) == pytest.approx(dot)


def test_ledger_rows_round_trip() -> None:
    at = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    record = DocumentRecord(
        doc_id="d",
        source="s3://b/k",
        version="v",
        status=DocStatus.DUPLICATE,
        chunk_ids=["c"],
        duplicate_of="e",
        signature=b"\xff\x00",
        band_keys=["x"],
        created_at=at,
        updated_at=at,
        metadata={"k": [1, 2]},
    )
    source = record_source(record)
    assert (source["status"], source["band_keys"]) == ("duplicate", ["x"])
    assert record_from_source(json.loads(json.dumps(source))) == record
