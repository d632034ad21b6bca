"""What both stores offer for a rebuild without downtime: generations of the index behind one
live name (an Elasticsearch alias, the embedded store's pointer file), and the stored chunks of
a generation read back page by page (``genai_ingest.reindex`` re-embeds them).

Generations are numbered. The live one is what searches read; a *pending* generation is a newer
one built for a model (``begin_reindex``; every writer's ``ensure_index`` for that model finds
it); the *previous* one is the newest generation older than the live one, kept after a swap so
that ``rollback`` can make it live again, until ``drop_previous`` deletes it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from genai_ingest.models import Chunk

#: Chunk metadata a store keeps (``base.chunk_fields`` and ``base.citation_fields``).
_STORED_METADATA = (
    "source",
    "source_type",
    "version",
    "parser",
    "language",
    "format",
    "section",
    "page_start",
    "page_end",
    "headings",
)


@runtime_checkable
class GenerationalStore(Protocol):
    """The generation operations of a store (see the module docstring)."""

    def live_index(self) -> str | None:
        """The live generation's name (what searches read)."""

    def begin_reindex(self, model_id: str, dimension: int) -> str:
        """Create (or resume) the pending generation for this model and write to it."""

    def swap_alias(self) -> str:
        """Make the write generation live atomically (the old one becomes the previous)."""

    def rollback(self) -> str:
        """Make the previous generation live again; returns its name."""

    def drop_previous(self) -> list[str]:
        """Delete every generation older than the live one; returns their names."""

    def iter_stored_chunks(self) -> Iterator[Chunk]:
        """The chunks of the generation this store reads, in chunk id order, page by page."""


def chunk_from_fields(fields: dict[str, Any], signature: bytes | None) -> Chunk:
    """A stored chunk as the pipeline made it (text, ids, citation, dedup keys); its
    ``embed_text`` is its text and it has no window texts until the caller gives it some."""
    return Chunk(
        chunk_id=fields["chunk_id"],
        doc_id=fields["doc_id"],
        index=int(fields.get("chunk_index") or 0),
        text=fields["text"],
        text_hash=fields["text_hash"],
        token_count=int(fields.get("token_count") or 0),
        metadata={key: fields.get(key) for key in _STORED_METADATA},
        signature=signature,
        band_keys=list(fields.get("band_keys") or []),
    )
