"""Bulk writes of chunks: the indexed document of a chunk, bulk actions, and one bulk pass
whose per-item failures are classified (mapping and dimension errors are permanent, the rest
transient). Retrying is the caller's: the pipeline's ``commit`` retries a whole document with
backoff, a breaker and the run's retry counters (every write here is an idempotent upsert)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch, helpers

from genai_ingest.config import ElasticsearchSettings
from genai_ingest.failures.errors import EmbeddingRejected, IngestError, Stage, StoreUnavailable
from genai_ingest.models import EmbeddedChunk
from genai_ingest.stores.base import chunk_fields, citation_fields
from genai_ingest.stores.es_client import is_transient_status, translated
from genai_ingest.stores.es_mapping import PASSAGES_FIELD

#: Bulk item error types that the same document will hit again: not worth a retry.
PERMANENT_ERROR_TYPES = frozenset(
    {
        "mapper_parsing_exception",
        "document_parsing_exception",
        "strict_dynamic_mapping_exception",
        "illegal_argument_exception",
    }
)


def b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def unb64(data: str | None) -> bytes | None:
    return base64.b64decode(data) if data else None


def chunk_source(item: EmbeddedChunk) -> dict[str, Any]:
    """The indexed document of one chunk: ``chunk_fields`` + citation + signature + one
    ``passages`` object per row of ``all_vectors`` (the chunk's own vector first)."""
    vectors = item.all_vectors
    if not np.all(np.isfinite(vectors)):
        raise EmbeddingRejected(
            f"chunk {item.chunk.chunk_id}: vector has NaN/inf values", stage=Stage.STORE
        )
    return {
        **citation_fields(item.chunk.metadata),
        **chunk_fields(item),
        "signature": b64(item.chunk.signature),
        PASSAGES_FIELD: [{"vector": row} for row in vectors.tolist()],
    }


def vectors_fit(item: EmbeddedChunk, dims: int) -> bool:
    """Whether a chunk's vector and every window vector have ``dims`` components."""
    windows = item.window_vectors
    return item.vector.shape == (dims,) and (
        windows is None or len(windows) == 0 or windows.shape[1:] == (dims,)
    )


def upsert_actions(index: str, chunks: Iterable[EmbeddedChunk]) -> Iterator[dict[str, Any]]:
    """Bulk ``index`` actions (create or overwrite) with ``_id`` = chunk id."""
    for item in chunks:
        yield {
            "_op_type": "index",
            "_index": index,
            "_id": item.chunk.chunk_id,
            "_source": chunk_source(item),
        }


def delete_actions(index: str, ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Bulk ``delete`` actions by chunk id."""
    for chunk_id in dict.fromkeys(ids):
        yield {"_op_type": "delete", "_index": index, "_id": chunk_id}


def bulk_kwargs(es: ElasticsearchSettings) -> dict[str, Any]:
    """``helpers.streaming_bulk`` options: batches bounded by count and bytes; per-item errors
    returned (not raised) so they can be classified; no client-side 429 retries (the caller's
    policy retries, with jitter and counters); no refresh (the store refreshes before it reads)."""
    return {
        "chunk_size": es.bulk_max_docs,
        "max_chunk_bytes": es.bulk_max_bytes,
        "raise_on_error": False,
        "raise_on_exception": True,
        "max_retries": 0,
    }


def _error_chain(error: dict[str, Any] | str) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    node: Any = error
    while isinstance(node, dict):
        chain.append(node)
        node = node.get("caused_by")
    return chain


def classify_item_error(status: int, error: dict[str, Any] | str) -> IngestError:
    """The pipeline error for one failed bulk item: mapping/dimension problems are permanent
    (the same chunk fails the same way), everything else is transient."""
    chain = _error_chain(error)
    reason = "; ".join(f"{e.get('type')}: {e.get('reason')}" for e in chain) or str(error)
    if not is_transient_status(status) and any(
        e.get("type") in PERMANENT_ERROR_TYPES for e in chain
    ):
        return EmbeddingRejected(f"rejected by Elasticsearch: {reason}", stage=Stage.STORE)
    return StoreUnavailable(f"bulk item failed ({status}): {reason}", stage=Stage.STORE)


def bulk_write(
    client: Elasticsearch, actions: Iterable[dict[str, Any]], es: ElasticsearchSettings
) -> list[dict[str, Any]]:
    """Send ``actions`` in bounded bulk requests; returns each item's result. A permanent item
    failure raises ``EmbeddingRejected`` at once; transient ones (429 back-pressure included)
    raise ``StoreUnavailable`` once the pass is done. Deleting a missing id is not a failure."""
    done: list[dict[str, Any]] = []
    transient: list[IngestError] = []
    with translated("bulk"):
        for ok, item in helpers.streaming_bulk(client, actions, **bulk_kwargs(es)):
            op, info = next(iter(item.items()))
            if ok or (op == "delete" and info.get("status") == 404):
                done.append(info)
                continue
            error = classify_item_error(info.get("status", 500), info.get("error", ""))
            if not error.replayable:
                raise error
            transient.append(error)
    if transient:
        raise StoreUnavailable(
            f"{len(transient)} bulk items failed transiently, e.g. {transient[0]}",
            stage=Stage.STORE,
        )
    return done
