"""Query the index with the model it was built with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genai_ingest.config import Settings
from genai_ingest.errors import ModelMismatch, Stage
from genai_ingest.models import SearchHit
from genai_ingest.pipeline import runtime_for


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
    identity = rt.store.index_identity()
    if identity is not None and identity != (rt.embedder.model_id, rt.embedder.dimension):
        raise ModelMismatch(
            f"index was built with {identity[0]} ({identity[1]} dims)", stage=Stage.EMBED
        )
    if not queries:
        return []
    vectors = rt.embedder.embed(list(queries))
    hybrid = bool(settings.store_url and settings.elasticsearch.hybrid)
    return [
        rt.store.search(vector, k=k, filters=filters, text=query)  # type: ignore[call-arg]
        if hybrid
        else rt.store.search(vector, k=k, filters=filters)
        for query, vector in zip(queries, vectors, strict=True)
    ]
