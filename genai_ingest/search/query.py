"""Query the index with the model it was built with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genai_ingest.config import SearchMode, Settings
from genai_ingest.failures.errors import ModelMismatch, Stage
from genai_ingest.models import SearchHit
from genai_ingest.run.runtime import mismatch_message, runtime_for


def search_index(
    settings: Settings, query: str, k: int = 5, filters: dict[str, Any] | None = None
) -> list[SearchHit]:
    """Top-k chunks for ``query``; refuses to query an index built with another model."""
    return search_many(settings, [query], k, filters)[0]


def search_many(
    settings: Settings, queries: Sequence[str], k: int = 5, filters: dict[str, Any] | None = None
) -> list[list[SearchHit]]:
    """Top-k chunks for each query, ranked as ``settings.search.mode`` says; the queries are
    embedded in one batch (not at all for a lexical search)."""
    rt = runtime_for(settings, writing=False)  # a lexical search needs no encoder
    mode = settings.search.mode
    if not queries:
        return []
    vectors: Sequence[Any] = [None] * len(queries)
    if mode is not SearchMode.LEXICAL:
        embedder = rt.query_embedder  # a local model's ONNX export when ready: no torch
        identity = rt.store.index_identity()
        if identity is not None and identity != (embedder.model_id, embedder.dimension):
            message = mismatch_message(identity[0], embedder.model_id)
            raise ModelMismatch(f"{message} ({identity[1]} dims)", stage=Stage.EMBED)
        vectors = embedder.embed(list(queries))
    return [
        rt.store.search(
            vector, k=k, filters=filters, text=query, mode=mode, fusion=settings.search.fusion
        )
        for query, vector in zip(queries, vectors, strict=True)
    ]


def hit_row(hit: SearchHit, mode: str) -> dict[str, Any]:
    """A search hit as printed: ids, source, score, the search mode that ranked it (its score
    is a similarity, a BM25 score or a fusion score), citation (pages, headings), text."""
    return {
        "doc_id": hit.doc_id,
        "chunk_id": hit.chunk_id,
        "source": hit.source,
        "score": round(hit.score, 4),
        "mode": mode,
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
