"""Plain data passed between stages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np


def utcnow() -> datetime:
    return datetime.now(UTC)


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def document_id(uri: str) -> str:
    """Stable id of a document: derived from its canonical source URI only."""
    return sha256_hex(uri)[:32]


def chunk_id(doc_id: str, text_hash: str, occurrence: int) -> str:
    """Deterministic chunk id: the same text at the same occurrence in a document keeps its id,
    so an edit elsewhere in the document does not rename (and re-write) unchanged chunks."""
    return sha256_hex(f"{doc_id}\x00{text_hash}\x00{occurrence}")[:32]


@dataclass(frozen=True)
class SourceRef:
    """Where a document comes from; cheap to list, fetched later."""

    uri: str
    name: str
    size: int | None = None
    expected_sha256: str | None = None
    mirrors: tuple[str, ...] = ()
    etag: str | None = None
    root: str | None = None  # the source folder a local file must stay inside
    skipped: str | None = None  # why this entry is not a document (fetch reports it)

    @property
    def doc_id(self) -> str:
        return document_id(self.uri)

    @property
    def source_type(self) -> str:
        return self.uri.split("://", 1)[0] if "://" in self.uri else "file"


@dataclass
class RawDocument:
    ref: SourceRef
    data: bytes

    @property
    def doc_id(self) -> str:
        return self.ref.doc_id

    @property
    def version(self) -> str:
        return sha256_hex(self.data)


@dataclass
class ParsedDocument:
    """Text of a document as Markdown (headings, tables), plus how it was obtained."""

    text: str
    parser: str
    format: str
    parsers_tried: list[str] = field(default_factory=list)
    pages: int | None = None
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Chunk:
    """A piece of a document: ``text`` is stored and returned by search, ``embed_text`` (the
    text with its heading context; ``text`` if empty) is what gets embedded, and so is each of
    ``window_texts`` (consecutive sentence windows of a long chunk: a search scores the chunk
    by the best of its vectors, so one sentence is not drowned by the rest of the chunk)."""

    chunk_id: str
    doc_id: str
    index: int
    text: str
    text_hash: str
    token_count: int  # tokens the model sees for embed_text, special tokens included
    metadata: dict[str, Any] = field(default_factory=dict)
    signature: bytes | None = None
    band_keys: list[str] = field(default_factory=list)
    duplicate_of: str | None = None
    embed_text: str = ""
    window_texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.embed_text = self.embed_text or self.text

    @property
    def embed_hash(self) -> str:
        """Key of the chunk's vector in the embedding cache."""
        return self.text_hash if self.embed_text == self.text else sha256_hex(self.embed_text)

    def window_hashes(self, pooled: bool = False) -> list[str]:
        """Keys of the window vectors in the embedding cache: by the window's text, or, for
        vectors pooled from the chunk's pass (they depend on the chunk), by chunk and text."""
        if pooled:
            return [sha256_hex(f"late\0{self.embed_hash}\0{t}") for t in self.window_texts]
        return [sha256_hex(text) for text in self.window_texts]

    def vector_keys(self, pooled: bool = False) -> list[str]:
        """Cache keys of every vector the chunk needs: its own, then its windows'."""
        return [self.embed_hash, *self.window_hashes(pooled)]

    def embedding_inputs(self) -> list[tuple[str, str]]:
        """(cache key, text) of every vector the chunk needs, windows encoded separately."""
        windows = zip(self.window_hashes(), self.window_texts, strict=True)
        return [(self.embed_hash, self.embed_text), *windows]


@dataclass
class EmbeddedChunk:
    """A chunk with the vector of its ``embed_text`` and one per window text, in order."""

    chunk: Chunk
    vector: np.ndarray
    window_vectors: np.ndarray | None = None  # shape (len(chunk.window_texts), dimension)

    @property
    def all_vectors(self) -> np.ndarray:
        """The chunk's vector then its window vectors: the rows a search takes the best of."""
        rows = [np.asarray(self.vector, np.float32)[None, :]]
        if self.window_vectors is not None and len(self.window_vectors):
            rows.append(np.asarray(self.window_vectors, np.float32))
        return np.concatenate(rows)


class DocStatus(StrEnum):
    INDEXED = "indexed"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass
class DocumentRecord:
    """The ledger row of one document: written last, after its chunks."""

    doc_id: str
    source: str
    version: str
    status: DocStatus
    chunk_ids: list[str] = field(default_factory=list)
    parser: str | None = None
    language: str | None = None
    text_hash: str | None = None
    duplicate_of: str | None = None
    signature: bytes | None = None
    band_keys: list[str] = field(default_factory=list)
    error_class: str | None = None
    error_kind: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkCandidate:
    """A stored chunk as the dedup stage sees it (``source``: its document's source URI, which
    ranks the copies of a duplicate: ``dedup.canonical_rank``)."""

    chunk_id: str
    doc_id: str
    text_hash: str
    signature: bytes | None
    source: str = ""


@dataclass
class SearchHit:
    doc_id: str
    chunk_id: str
    source: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoreStats:
    documents: int
    chunks: int
    chunk_ids_sha256: str
    model_id: str | None = None
    dimension: int | None = None
