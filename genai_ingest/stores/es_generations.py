"""The generations of a chunk index: physical indexes ``<alias>-v<n>-...`` with their ledgers,
one of them live behind the chunk and ledger aliases, and each one's mapping ``_meta`` (the
model, dimension and schema it was built for). See ``stores.elasticsearch``; what a generation
is for a rebuild: ``stores.generations``.

A generation's stored chunks are read back page by page with ``search_after`` on the chunk id
and no point in time: a page may take minutes to re-embed, longer than a point in time lives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from genai_ingest.config import ElasticsearchSettings
from genai_ingest.failures.errors import ModelMismatch, Stage
from genai_ingest.models import Chunk
from genai_ingest.stores.es_bulk import unb64
from genai_ingest.stores.es_client import create_index, translated
from genai_ingest.stores.es_mapping import (
    LEGACY_VECTOR_FIELD,
    PASSAGES_FIELD,
    SCHEMA_VERSION,
    generation_of,
    identity_of,
    index_mapping,
    ledger_mapping,
    ledger_name,
    physical_index_name,
)
from genai_ingest.stores.generations import chunk_from_fields

_PAGE = 500


class Generations:
    """The generations under one alias, on one client."""

    def __init__(self, client: Elasticsearch, es: ElasticsearchSettings) -> None:
        self.client = client
        self.alias = es.index
        self._es = es
        self._metas: dict[str, dict[str, Any]] = {}  # physical index -> its mapping _meta

    def live(self) -> str | None:
        """The physical chunk index behind the alias (None before the first generation)."""
        with translated(f"get alias {self.alias}"):
            try:
                found = self.client.indices.get_alias(name=self.alias)
            except NotFoundError:
                return None
        return next(iter(found), None)

    def all(self) -> dict[str, dict[str, Any]]:
        """``{physical index: _meta}`` of every chunk index under the alias."""
        with translated("list generations"):
            found = self.client.indices.get_mapping(index=f"{self.alias}-v*")
        return {
            name: body["mappings"].get("_meta", {})
            for name, body in found.items()
            if generation_of(self.alias, name) is not None
        }

    def pending(self, model_id: str, dims: int) -> str | None:
        """The newest generation newer than the live one built for this model, if any."""
        live = self.live()
        floor = (generation_of(self.alias, live) or 0) if live else 0
        candidates = {
            generation_of(self.alias, name) or 0: name
            for name, meta in self.all().items()
            if identity_of(meta) == (model_id, dims) and meta.get("schema") == SCHEMA_VERSION
        }
        newer = [g for g in candidates if g > floor]
        return candidates[max(newer)] if newer else None

    def create(self, model_id: str, dims: int) -> str:
        generations = [generation_of(self.alias, n) or 0 for n in self.all()]
        index = physical_index_name(self.alias, max(generations, default=0) + 1, model_id, dims)
        create_index(self.client, index, index_mapping(model_id, dims, self._es))
        create_index(self.client, ledger_name(index), ledger_mapping())
        return index

    def meta_of(self, index: str) -> dict[str, Any] | None:
        """The mapping ``_meta`` of an index (None if it does not exist)."""
        with translated(f"get mapping {index}"):
            try:
                found = self.client.indices.get_mapping(index=index)
            except NotFoundError:
                return None
        return next(iter(found.values()))["mappings"].get("_meta", {})

    def cached_meta(self, index: str) -> dict[str, Any] | None:
        """``meta_of``, read once per index: a physical index's mapping never changes."""
        if index not in self._metas:
            meta = self.meta_of(index)
            if meta is None:
                return None
            self._metas[index] = meta
        return self._metas[index]

    def identity(self, index: str) -> tuple[str, int] | None:
        meta = self.meta_of(index)
        return identity_of(meta) if meta is not None else None

    def add_aliases(self, index: str, previous: str | None) -> None:
        pairs = [(index, self.alias), (ledger_name(index), ledger_name(self.alias))]
        actions: list[dict[str, Any]] = [{"add": {"index": i, "alias": a}} for i, a in pairs]
        if previous:
            old = [(previous, self.alias), (ledger_name(previous), ledger_name(self.alias))]
            actions = [{"remove": {"index": i, "alias": a}} for i, a in old] + actions
        with translated("update aliases"):
            self.client.indices.update_aliases(actions=actions)

    def older(self) -> list[str]:
        """Every generation older than the live one, oldest first."""
        live = self.live()
        floor = (generation_of(self.alias, live) or 0) if live else 0
        numbered = sorted((generation_of(self.alias, name) or 0, name) for name in self.all())
        return [name for number, name in numbered if number < floor]

    def roll_back(self) -> str:
        """Move both aliases back to the previous generation in one ``update_aliases``; the
        generation rolled back from stays (newer than the live one: pending again)."""
        older = self.older()
        if not older:
            raise ModelMismatch("no previous generation to roll back to", stage=Stage.STORE)
        self.add_aliases(older[-1], previous=self.live())
        return older[-1]

    def drop_older(self) -> list[str]:
        """Delete every generation (chunks and ledger) older than the live one."""
        names = self.older()
        if names:
            with translated("delete previous generations"):
                self.client.indices.delete(index=[*names, *map(ledger_name, names)])
        return names

    def drop_all(self) -> list[str]:
        """Delete every generation (chunks and ledgers) under the alias; returns the names."""
        with translated("list indexes"):
            names = sorted(self.client.indices.get(index=f"{self.alias}-v*"))
        if names:
            with translated("delete indexes"):
                self.client.indices.delete(index=names)
        self._metas.clear()
        return names


def stored_chunks(client: Elasticsearch, index: str) -> Iterator[Chunk]:
    """The chunks stored in ``index``, in chunk id order (see the module docstring)."""
    after: list[Any] | None = None
    while True:
        with translated(f"read chunks of {index}"):
            page = client.search(
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
