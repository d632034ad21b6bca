"""The search explorer app as plain functions: hits with their scores and citations, the
documents behind them, and the index's statistics and filter values."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from genai_ingest.config import Settings
from genai_ingest.failures.dlq import DeadLetterQueue, EntryStatus
from genai_ingest.models import SourceRef
from genai_ingest.stores.base import VectorStore
from genai_ingest.triage.entries import ALL, source_name

SEARCH_FILTERS = ("source_type", "format", "language", "parser")


def search_hits(
    settings: Settings, query: str, k: int = 5, filters: Mapping[str, str | None] | None = None
) -> pd.DataFrame:
    """Hits for ``query`` ranked as ``search.mode`` says, with their scores (filters with
    ``None``/``ALL`` are ignored)."""
    from genai_ingest.search.query import search_index

    wanted = {key: v for key, v in (filters or {}).items() if v not in (None, "", ALL)}
    hits = search_index(settings, query, k=k, filters=wanted or None) if query.strip() else []
    rows = [
        {
            "rank": rank,
            "score": round(hit.score, 4),
            "name": source_name(hit.source),
            "pages": _pages(hit.metadata.get("page_start"), hit.metadata.get("page_end")),
            "headings": " › ".join(hit.metadata.get("headings") or ()),
            "text": hit.text,
            "language": hit.metadata.get("language", ""),
            "format": hit.metadata.get("format", ""),
            "doc_id": hit.doc_id,
            "chunk_id": hit.chunk_id,
            "source": hit.source,
        }
        for rank, hit in enumerate(hits, 1)
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "rank",
            "score",
            "name",
            "pages",
            "headings",
            "text",
            "language",
            "format",
            "doc_id",
            "chunk_id",
            "source",
        ],
    )


def _pages(start: int | None, end: int | None) -> str:
    """Where a hit is, to cite it: "3", "3-4", or "" for a format without pages."""
    if start is None:
        return ""
    return str(start) if end in (None, start) else f"{start}-{end}"


def hit_documents(store: VectorStore, doc_ids: Iterable[str]) -> pd.DataFrame:
    """The ledger rows of the documents behind the hits, in hit order."""
    rows = []
    for doc_id in dict.fromkeys(doc_ids):
        record = store.get_document(doc_id)
        if record is not None:
            rows.append(
                {
                    "name": source_name(record.source),
                    "status": record.status.value,
                    "chunks": len(record.chunk_ids),
                    "parser": record.parser,
                    "language": record.language,
                    "format": record.metadata.get("format"),
                    "indexed_at": record.metadata.get("indexed_at"),
                    "duplicate_of": record.duplicate_of,
                    "doc_id": record.doc_id,
                    "source": record.source,
                }
            )
    return pd.DataFrame(rows)


def index_stats(store: VectorStore, dlq: DeadLetterQueue) -> dict[str, Any]:
    """Documents, chunks, model, and ledger counts per status, format and language."""
    stats = store.stats()
    records = list(store.iter_documents())
    return {
        "documents": stats.documents,
        "chunks": stats.chunks,
        "model_id": stats.model_id,
        "dimension": stats.dimension,
        "dlq_open": len(dlq.entries(status=EntryStatus.OPEN)),
        "by_status": dict(Counter(r.status.value for r in records).most_common()),
        "by_format": dict(Counter(r.metadata.get("format", "?") for r in records).most_common()),
        "by_language": dict(Counter(r.language or "?" for r in records).most_common()),
    }


def search_filter_options(store: VectorStore) -> dict[str, list[str]]:
    """Values seen in the ledger per search filter, for dropdowns (``ALL`` first)."""
    values: dict[str, set[str]] = {key: set() for key in SEARCH_FILTERS}
    for record in store.iter_documents():
        seen = {
            "source_type": SourceRef(uri=record.source, name="").source_type,
            "format": record.metadata.get("format"),
            "language": record.language,
            "parser": record.parser,
        }
        for key, value in seen.items():
            if value:
                values[key].add(str(value))
    return {key: [ALL, *sorted(v)] for key, v in values.items()}
