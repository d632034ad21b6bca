"""The storage contract every vector store implements (embedded SQLite, Elasticsearch).

A store holds three things: chunks with their vectors, the document ledger, and the index's
identity (model id and dimension). The pipeline's idempotency rests on this write order, which
every implementation must make safe to repeat after a crash at any point:

1. ``upsert_chunks`` (by chunk id: a repeat overwrites, never duplicates),
2. ``delete_chunks`` of the document's stale ids,
3. ``put_document`` (the ledger row, last).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from genai_ingest.config import FusionSettings, SearchMode
from genai_ingest.models import (
    ChunkCandidate,
    DocumentRecord,
    EmbeddedChunk,
    SearchHit,
    StoreStats,
    sha256_hex,
)

#: Metadata keys a search may filter on (exact match; a list value means "any of").
FILTERABLE_FIELDS = ("doc_id", "source", "source_type", "version", "parser", "language", "format")


@runtime_checkable
class VectorStore(Protocol):
    """Chunks + vectors + document ledger."""

    def ensure_index(self, model_id: str, dimension: int) -> None:
        """Create the index for this model, or check that it was built with it.

        Raises ``ModelMismatch`` if the index holds another model's vectors."""

    def index_identity(self) -> tuple[str, int] | None:
        """``(model_id, dimension)`` recorded on the index, or None before the first write."""

    def upsert_chunks(self, chunks: Sequence[EmbeddedChunk]) -> int:
        """Insert or overwrite chunks by id; returns how many were written."""

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        """Delete chunks by id; returns how many existed."""

    def chunk_ids_of(self, doc_id: str) -> set[str]:
        """Ids of the chunks stored for a document (finds orphans the ledger does not list)."""

    def find_chunks(
        self, *, text_hashes: Sequence[str] = (), band_keys: Sequence[str] = ()
    ) -> list[ChunkCandidate]:
        """Chunks sharing an exact text hash or an LSH band key (dedup candidates)."""

    def search(
        self,
        vector: np.ndarray | None,
        k: int = 5,
        filters: dict[str, Any] | None = None,
        *,
        text: str | None = None,
        mode: SearchMode = SearchMode.DENSE,
        fusion: FusionSettings | None = None,
    ) -> list[SearchHit]:
        """Top-k distinct chunks; filters are exact matches on ``FILTERABLE_FIELDS``.

        ``dense``: by similarity. A chunk's score is the best dot product of the query with any
        of its vectors (``EmbeddedChunk.all_vectors``: the chunk's, then its windows'); the
        hit's score is that best. ``upsert_chunks`` checks every vector's dimension and
        replaces all of a chunk's vectors. ``lexical``: by BM25 of ``text`` on the chunk text
        (the vector may be None). ``hybrid``: the dense and the BM25 rankings, each
        ``fusion.candidates`` deep, fused by ``genai_ingest.stores.fusion`` (scores are fusion
        scores): every store ranks the same hits the same way."""

    def stats(self) -> StoreStats: ...

    def get_document(self, doc_id: str) -> DocumentRecord | None: ...

    def put_document(self, record: DocumentRecord) -> None: ...

    def delete_document(self, doc_id: str) -> None: ...

    def iter_documents(self) -> Iterator[DocumentRecord]: ...

    def find_documents(
        self, *, text_hash: str | None = None, band_keys: Sequence[str] = ()
    ) -> list[DocumentRecord]:
        """Indexed documents sharing a text hash or an LSH band key (dedup candidates)."""

    def close(self) -> None: ...


@runtime_checkable
class DocumentClaims(Protocol):
    """Leases on documents, so concurrent runs never process the same document at once.

    A claim names its owner (one per worker process) and expires ``lease_s`` after it was
    taken or last renewed; an expired claim may be taken over by anyone. Every operation is
    atomic across processes and machines sharing the store."""

    def claim(self, doc_id: str, owner: str, lease_s: float) -> bool:
        """Take (or take over an expired, or renew one's own) claim; False if another live
        owner holds it."""

    def renew(self, doc_ids: Sequence[str], owner: str, lease_s: float) -> set[str]:
        """Extend the owner's claims; returns the ids it no longer holds (taken over)."""

    def release(self, doc_ids: Sequence[str], owner: str) -> None:
        """Drop the owner's claims (another owner's claim is left alone)."""

    def holder(self, doc_id: str) -> tuple[str, float] | None:
        """``(owner, expires_at)`` (epoch seconds) of a claim, live or expired, or None."""


def chunk_ids_digest(chunk_ids: Iterable[str]) -> str:
    """sha256 of the sorted chunk ids, one per line: equal digests mean equal indexes."""
    return sha256_hex("\n".join(sorted(chunk_ids)))


def chunk_fields(item: EmbeddedChunk) -> dict[str, Any]:
    """The flat, storable fields of a chunk (shared by every store)."""
    chunk = item.chunk
    meta = chunk.metadata
    return {
        "chunk_id": chunk.chunk_id,
        "doc_id": chunk.doc_id,
        "chunk_index": chunk.index,
        "text": chunk.text,
        "text_hash": chunk.text_hash,
        "token_count": chunk.token_count,
        "source": meta.get("source", ""),
        "source_type": meta.get("source_type", ""),
        "version": meta.get("version", ""),
        "parser": meta.get("parser", ""),
        "language": meta.get("language") or "",
        "format": meta.get("format", ""),
        "section": meta.get("section", ""),
        "band_keys": list(chunk.band_keys),
    }


def _page(value: Any) -> int | None:
    return int(value) if value is not None else None


def citation_fields(metadata: dict[str, Any]) -> dict[str, Any]:
    """Where a chunk is in its document: 1-based pages (None without pages), heading path."""
    return {
        "page_start": _page(metadata.get("page_start")),
        "page_end": _page(metadata.get("page_end")),
        "headings": [str(h) for h in metadata.get("headings") or ()],
    }


def query_text_for(mode: SearchMode, text: str | None) -> str:
    """The query text a lexical or hybrid search needs (``ValueError`` without one)."""
    if text is None:
        raise ValueError(f"{mode.value} search needs the query text")
    return text
