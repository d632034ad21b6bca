"""Query the index with the model it was built with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genai_ingest.config import Settings
from genai_ingest.errors import ModelMismatch, Stage
from genai_ingest.models import SearchHit
from genai_ingest.runtime import mismatch_message, runtime_for


def search_index(
    settings: Settings, query: str, k: int = 5, filters: dict[str, Any] | None = None
) -> list[SearchHit]:
    """Top-k chunks for ``query``; refuses to query an index built with another model."""
    return search_many(settings, [query], k, filters)[0]


def search_many(
    settings: Settings, queries: Sequence[str], k: int = 5, filters: dict[str, Any] | None = None
) -> list[list[SearchHit]]:
    """Top-k chunks for each query, the queries embedded in one batch."""
    rt = runtime_for(settings)
    embedder = rt.query_embedder  # a local model's ONNX export when ready: no torch
    identity = rt.store.index_identity()
    if identity is not None and identity != (embedder.model_id, embedder.dimension):
        message = mismatch_message(identity[0], embedder.model_id)
        raise ModelMismatch(f"{message} ({identity[1]} dims)", stage=Stage.EMBED)
    if not queries:
        return []
    vectors = embedder.embed(list(queries))
    hybrid = bool(settings.store_url and settings.elasticsearch.hybrid)
    return [
        rt.store.search(vector, k=k, filters=filters, text=query)  # type: ignore[call-arg]
        if hybrid
        else rt.store.search(vector, k=k, filters=filters)
        for query, vector in zip(queries, vectors, strict=True)
    ]


def hit_row(hit: SearchHit) -> dict[str, Any]:
    """A search hit as printed: ids, source, score, citation (pages, headings), text."""
    return {
        "doc_id": hit.doc_id,
        "chunk_id": hit.chunk_id,
        "source": hit.source,
        "score": round(hit.score, 4),
        "page_start": hit.metadata.get("page_start"),
        "page_end": hit.metadata.get("page_end"),
        "headings": list(hit.metadata.get("headings") or []),
        "text": hit.text,
    }


def citation(row: dict[str, Any]) -> str:
    """The citation of a hit ("  (p. 3-4 › Chapter › Section)"), as far as it is known."""
    parts = []
    if row["page_start"] is not None:
        start, end = row["page_start"], row["page_end"]
        parts.append(f"p. {start}" if end in (None, start) else f"p. {start}-{end}")
    parts += row["headings"]
    return "  (" + " › ".join(parts) + ")" if parts else ""
