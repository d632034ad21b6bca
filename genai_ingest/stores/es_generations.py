"""Generation operations of the Elasticsearch store (``stores.generations``): roll the alias
back to the previous generation, delete the generations older than the live one, and read a
generation's stored chunks page by page (``search_after`` on the chunk id, no point in time:
a page may take minutes to re-embed, longer than a point in time is kept alive)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from genai_ingest.errors import ModelMismatch, Stage
from genai_ingest.models import Chunk
from genai_ingest.stores.es_bulk import unb64
from genai_ingest.stores.es_client import translated
from genai_ingest.stores.es_mapping import (
    LEGACY_VECTOR_FIELD,
    PASSAGES_FIELD,
    generation_of,
    ledger_name,
)
from genai_ingest.stores.generations import chunk_from_fields

_PAGE = 500


class ElasticsearchGenerations:
    """Mixed into ``ElasticsearchVectorStore``: uses its client, alias, generation list
    (``_generations``), alias moves (``_add_aliases``) and read index."""

    def _older_generations(self) -> list[tuple[int, str]]:
        """``(number, physical index)`` of every generation older than the live one."""
        live = self._alias_target(self.alias)
        floor = (generation_of(self.alias, live) or 0) if live else 0
        numbered = [(generation_of(self.alias, n) or 0, n) for n in self._generations()]
        return sorted(pair for pair in numbered if pair[0] < floor)

    def rollback(self) -> str:
        """Move both aliases back to the previous generation in one ``update_aliases``; the
        generation rolled back from stays (newer than the live one: pending again)."""
        older = self._older_generations()
        if not older:
            raise ModelMismatch("no previous generation to roll back to", stage=Stage.STORE)
        previous = older[-1][1]
        self._add_aliases(previous, previous=self._alias_target(self.alias))
        self._target = None
        return previous

    def drop_previous(self) -> list[str]:
        """Delete every generation (chunks and ledger) older than the live one."""
        names = [name for _, name in self._older_generations()]
        if names:
            with translated("delete previous generations"):
                self.client.indices.delete(index=[*names, *map(ledger_name, names)])
        return names

    def iter_stored_chunks(self) -> Iterator[Chunk]:
        index = self._read_index()
        if index is None:
            return
        self._refresh(index, force=True)
        after: list[Any] | None = None
        while True:
            with translated(f"read chunks of {index}"):
                page = self.client.search(
                    index=index,
                    query={"match_all": {}},
                    sort=[{"chunk_id": "asc"}],
                    search_after=after,
                    size=_PAGE,
                    source={"excludes": [PASSAGES_FIELD, LEGACY_VECTOR_FIELD]},
                    track_total_hits=False,
                )
            hits = page["hits"]["hits"]
            for hit in hits:
                source = hit["_source"]
                yield chunk_from_fields(source, unb64(source.get("signature")))
            if len(hits) < _PAGE:
                return
            after = hits[-1]["sort"]
