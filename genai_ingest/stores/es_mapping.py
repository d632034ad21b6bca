"""Index names and mappings of the Elasticsearch store (pure functions, no client).

Index layout under the alias ``A`` (``settings.elasticsearch.index``)::

    A-v{n}-{model-slug}-{dims}          chunks of generation n     <- alias A
    A-v{n}-{model-slug}-{dims}-ledger   its document ledger        <- alias A-ledger
    A-dlq, A-dlq-raw                    dead letters and their raw bytes (base64)

Only server-core field types are used (no ``analysis-common``, ``mapper-extras`` or scripts),
so the mappings load on the JDK-less server build the tests run."""

from __future__ import annotations

import re
from typing import Any

from genai_ingest.config import ElasticsearchSettings
from genai_ingest.failures.errors import ModelMismatch, Stage

#: A chunk's vectors (its own, then one per sentence window) as nested ``passages`` objects:
#: kNN on ``passages.vector`` scores a chunk by its best passage and returns distinct chunks.
PASSAGES_FIELD = "passages"
VECTOR_FIELD = f"{PASSAGES_FIELD}.vector"
#: 3: nested passage vectors (2: one top-level ``vector``; such an index is read, not written).
SCHEMA_VERSION = 3
LEGACY_VECTOR_FIELD = "vector"

_KEYWORD = {"type": "keyword"}
_INTEGER = {"type": "integer"}
_KEYWORD_FIELDS = (
    "chunk_id",
    "doc_id",
    "source",
    "source_type",
    "version",
    "parser",
    "language",
    "format",
    "section",
    "text_hash",
    "band_keys",
)
#: Citation fields of a chunk: the pages it spans (null when unknown) and the headings above
#: it, outermost first (exact-match filterable; ``headings.text`` for full-text queries).
CITATION_MAPPING: dict[str, Any] = {
    "page_start": _INTEGER,
    "page_end": _INTEGER,
    "headings": {"type": "keyword", "fields": {"text": {"type": "text"}}},
}


def model_slug(model_id: str) -> str:
    """A lowercase, index-name-safe form of a model id (``BAAI/bge-m3`` -> ``baai-bge-m3``)."""
    return re.sub(r"[^a-z0-9]+", "-", model_id.lower()).strip("-")[:48] or "model"


def physical_index_name(alias: str, generation: int, model_id: str, dims: int) -> str:
    """``{alias}-v{n}-{model-slug}-{dims}``: one physical chunk index per generation."""
    return f"{alias}-v{generation}-{model_slug(model_id)}-{dims}"


def ledger_name(index: str) -> str:
    """The companion ledger of a chunk index (or of the alias: ``{alias}-ledger``)."""
    return f"{index}-ledger"


def generation_of(alias: str, index: str) -> int | None:
    """The generation number in a physical chunk index name, None for other names."""
    match = re.fullmatch(rf"{re.escape(alias)}-v(\d+)-.+-\d+", index)
    return int(match.group(1)) if match and not index.endswith("-ledger") else None


def vector_field(meta: dict[str, Any]) -> str:
    """The kNN field of a chunk index, from its ``_meta`` (an older schema's single vector)."""
    return VECTOR_FIELD if meta.get("schema") == SCHEMA_VERSION else LEGACY_VECTOR_FIELD


def identity_of(meta: dict[str, Any]) -> tuple[str, int] | None:
    """``(model_id, dimension)`` recorded in a chunk index's ``_meta``."""
    return (meta["model_id"], int(meta["dimension"])) if "model_id" in meta else None


def check_writable(index: str, meta: dict[str, Any], model_id: str, dims: int) -> None:
    """Raise ``ModelMismatch`` unless the index was built for this model with this schema."""
    identity = identity_of(meta)
    if identity != (model_id, dims):
        raise ModelMismatch(
            f"index {index} holds vectors of {identity}; refusing {model_id} "
            f"({dims} dims): rebuild it with genai-ingest reindex, then reindex --swap",
            stage=Stage.STORE,
        )
    if meta.get("schema") != SCHEMA_VERSION:
        raise ModelMismatch(
            f"index {index} has schema {meta.get('schema')}, this version writes schema "
            f"{SCHEMA_VERSION} (nested passage vectors): rebuild it with genai-ingest reindex, "
            "then reindex --swap (searches read the old one meanwhile)",
            stage=Stage.STORE,
        )


def index_mapping(model_id: str, dims: int, es: ElasticsearchSettings) -> dict[str, Any]:
    """Mappings of a chunk index: the passage vectors (nested, excluded from ``_source``),
    text, keyword metadata, citation fields, and the model identity and schema in ``_meta``."""
    properties: dict[str, Any] = {name: _KEYWORD for name in _KEYWORD_FIELDS}
    properties.update(CITATION_MAPPING)
    properties.update(
        {
            "text": {"type": "text"},
            "chunk_index": _INTEGER,
            "token_count": _INTEGER,
            "signature": {"type": "binary"},
            PASSAGES_FIELD: {
                "type": "nested",
                "properties": {
                    "vector": {
                        "type": "dense_vector",
                        "dims": dims,
                        "index": True,
                        "similarity": es.similarity,
                        "index_options": {"type": es.index_options},
                    }
                },
            },
        }
    )
    return {
        "dynamic": "strict",
        "_meta": {
            "kind": "chunks",
            "model_id": model_id,
            "dimension": dims,
            "schema": SCHEMA_VERSION,
        },
        "_source": {"excludes": [PASSAGES_FIELD]},
        "properties": properties,
    }


def ledger_mapping() -> dict[str, Any]:
    """Mappings of a ledger index: lookup fields indexed, the full record stored as-is."""
    return {
        "dynamic": "strict",
        "_meta": {"kind": "ledger", "schema": SCHEMA_VERSION},
        "properties": {
            "doc_id": _KEYWORD,
            "status": _KEYWORD,
            "text_hash": _KEYWORD,
            "band_keys": _KEYWORD,
            "signature": {"type": "binary"},
            "record": {"type": "object", "enabled": False},
        },
    }


def dlq_mapping() -> dict[str, Any]:
    """Mappings of the DLQ index: the filter fields indexed, the entry stored as-is."""
    return {
        "dynamic": "strict",
        "properties": {
            "entry_id": _KEYWORD,
            "status": _KEYWORD,
            "stage": _KEYWORD,
            "error_class": _KEYWORD,
            "first_failed_at": {"type": "date"},
            "last_failed_at": {"type": "date"},
            "entry": {"type": "object", "enabled": False},
        },
    }


def dlq_raw_mapping() -> dict[str, Any]:
    """Mappings of the raw-bytes index: base64 data, not indexed."""
    return {
        "dynamic": "strict",
        "properties": {"data": {"type": "binary"}, "size": {"type": "long"}},
    }
