"""The production store: chunks as Elasticsearch dense vectors, the ledger and (optionally) the
DLQ in companion indexes. Mirrors ``SQLiteVectorStore`` semantics; works with 8.x and 9.x
servers. Names and mappings: ``es_mapping``; client: ``es_client``; bulk writes: ``es_bulk``;
search: ``es_search``; ledger rows: ``es_ledger``; DLQ: ``es_dlq``; generations and their
aliases: ``es_generations``.

A model or dimension change never touches the live generation: ``begin_reindex`` creates
generation n+1 (no alias), ``genai-ingest reindex`` fills it from the stored chunks (so does
every worker's ``ensure_index`` for that model), and ``swap_alias`` moves both aliases in one
atomic ``update_aliases`` call; the previous generation stays for ``rollback`` until
``drop_previous``. A schema change (``SCHEMA_VERSION``, e.g. 2 -> 3: nested passage vectors) is
rebuilt the same way: ``ensure_index`` refuses to write to a live index of another schema, while
searches keep reading it (its own vector field) until the new generation is swapped in.

Refresh: writes do not wait for a refresh (``refresh=wait_for`` costs up to a refresh interval,
1 s, per write). The store remembers which of its indexes it wrote and refreshes such an index
before it searches it (``chunk_ids_of``, dedup candidates, ledger listings, search), so a run
reads its own writes; ``ensure_index`` and ``stats`` refresh too, so a new process sees what a
crashed or finished one wrote. Ledger ``get_document`` is a real-time GET."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch, NotFoundError

from genai_ingest.config import ElasticsearchSettings, FusionSettings, SearchMode, Settings
from genai_ingest.failures.errors import ModelMismatch, Stage
from genai_ingest.models import (
    Chunk,
    ChunkCandidate,
    DocStatus,
    DocumentRecord,
    EmbeddedChunk,
    SearchHit,
    StoreStats,
)
from genai_ingest.stores.es_bulk import (
    PERMANENT_ERROR_TYPES,
    bulk_kwargs,
    bulk_write,
    chunk_source,
    classify_item_error,
    delete_actions,
    unb64,
    upsert_actions,
    vectors_fit,
)
from genai_ingest.stores.es_client import (
    CompatElasticsearch,
    api_error,
    client_from_settings,
    compat_mimetype,
    is_transient_status,
    scan,
    translated,
)
from genai_ingest.stores.es_dlq import MAX_RAW_DLQ_BYTES, ElasticsearchDeadLetterQueue
from genai_ingest.stores.es_generations import Generations, stored_chunks
from genai_ingest.stores.es_ledger import (
    dedup_candidates_query,
    record_from_source,
    record_source,
)
from genai_ingest.stores.es_mapping import (
    SCHEMA_VERSION,
    VECTOR_FIELD,
    check_writable,
    generation_of,
    identity_of,
    index_mapping,
    ledger_mapping,
    ledger_name,
    model_slug,
    physical_index_name,
    vector_field,
)
from genai_ingest.stores.es_search import ChunkSearcher, raw_similarity

__all__ = [
    "MAX_RAW_DLQ_BYTES",
    "PERMANENT_ERROR_TYPES",
    "SCHEMA_VERSION",
    "VECTOR_FIELD",
    "CompatElasticsearch",
    "ElasticsearchDeadLetterQueue",
    "ElasticsearchVectorStore",
    "api_error",
    "bulk_kwargs",
    "chunk_source",
    "classify_item_error",
    "client_from_settings",
    "compat_mimetype",
    "delete_actions",
    "generation_of",
    "index_mapping",
    "is_transient_status",
    "ledger_mapping",
    "ledger_name",
    "model_slug",
    "physical_index_name",
    "raw_similarity",
    "record_from_source",
    "record_source",
    "upsert_actions",
]


class ElasticsearchVectorStore:
    """``VectorStore`` on an Elasticsearch cluster (see the module docstring)."""

    def __init__(self, client: Elasticsearch, es: ElasticsearchSettings) -> None:
        self.client = client
        self.alias = es.index
        self._es = es
        self._target: str | None = None
        self._searcher = ChunkSearcher(client, es)
        self._unrefreshed: set[str] = set()
        self._gens = Generations(client, es)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticsearchVectorStore:
        return cls(client_from_settings(settings), settings.elasticsearch)

    # --- refresh ------------------------------------------------------------------------------

    def _wrote(self, index: str) -> None:
        with self._lock:
            self._unrefreshed.add(index)

    def _refresh(self, *indexes: str, force: bool = False) -> None:
        """Refresh the indexes this store wrote since their last refresh (all with force)."""
        with self._lock:
            stale = [i for i in indexes if force or i in self._unrefreshed]
            self._unrefreshed.difference_update(stale)
        if stale:
            with translated("refresh"):
                self.client.indices.refresh(index=stale, ignore_unavailable=True)

    # --- generations and the alias (``es_generations``) -----------------------------------------

    def _read_index(self) -> str | None:
        """Where reads go: the write target once chosen, else the live generation."""
        return self._target or self._gens.live()

    @property
    def write_index(self) -> str | None:
        """The physical chunk index this store writes to (None before ``ensure_index``)."""
        return self._target

    def live_index(self) -> str | None:
        """The physical chunk index behind the alias (what searchers see)."""
        return self._gens.live()

    def index_identity(self) -> tuple[str, int] | None:
        index = self._read_index()
        return self._gens.identity(index) if index else None

    def ensure_index(self, model_id: str, dimension: int) -> None:
        """Write to the generation built for this model: a pending rebuild, else the live
        index; the first generation is created and aliased at once. Any other live model
        raises ``ModelMismatch``, and so does a live index of another schema: call
        ``begin_reindex`` to build a new generation."""
        live = self._gens.live()
        pending = self._gens.pending(model_id, dimension)
        if pending:
            self._target = pending
        elif live is None:
            self._target = self._gens.create(model_id, dimension)
            self._gens.add_aliases(self._target, previous=None)
        else:
            check_writable(live, self._gens.meta_of(live) or {}, model_id, dimension)
            self._target = live
        self._refresh(self._target, ledger_name(self._target), force=True)

    def begin_reindex(self, model_id: str, dimension: int) -> str:
        """Create (or resume) generation n+1 for this model, unaliased, and write to it.
        Returns its physical name. Search through the alias keeps seeing the live index."""
        self._target = self._gens.pending(model_id, dimension) or self._gens.create(
            model_id, dimension
        )
        return self._target

    def swap_alias(self, *, delete_previous: bool = False) -> str:
        """Make the write generation live: refresh it, then move the chunk and ledger aliases
        in one atomic ``update_aliases``. Optionally delete the previous generation."""
        target = self._require_target()
        live = self._gens.live()
        if live != target:
            self._refresh(target, ledger_name(target), force=True)
            self._gens.add_aliases(target, previous=live)
            if delete_previous and live:
                with translated("delete previous generation"):
                    self.client.indices.delete(index=[live, ledger_name(live)])
        return target

    def rollback(self) -> str:
        self._target = None
        return self._gens.roll_back()

    def drop_previous(self) -> list[str]:
        return self._gens.drop_older()

    def iter_stored_chunks(self) -> Iterator[Chunk]:
        index = self._read_index()
        if index is None:
            return iter(())
        self._refresh(index, force=True)
        return stored_chunks(self.client, index)

    def drop(self) -> list[str]:
        """Delete every generation (chunks and ledgers) under the alias; returns the names."""
        self._target = None
        return self._gens.drop_all()

    def _require_target(self) -> str:
        if self._target is None:
            raise ModelMismatch("index not initialised: call ensure_index", stage=Stage.STORE)
        return self._target

    def _check_write(self, chunks: Sequence[EmbeddedChunk]) -> str:
        """The write target, after checking every vector (window vectors included) against
        its ``_meta``."""
        target = self._require_target()
        identity = identity_of(self._gens.cached_meta(target) or {})
        if identity is None:
            raise ModelMismatch(f"index {target} is gone or has no model", stage=Stage.STORE)
        for item in chunks:
            if not vectors_fit(item, identity[1]):
                shapes = [item.vector.shape, getattr(item.window_vectors, "shape", None)]
                raise ModelMismatch(
                    f"vectors of shapes {shapes} for a {identity[1]}-dim index",
                    stage=Stage.STORE,
                )
        return target

    # --- chunks -------------------------------------------------------------------------------

    def upsert_chunks(self, chunks: Sequence[EmbeddedChunk]) -> int:
        if not chunks:
            return 0
        target = self._check_write(chunks)
        self._wrote(target)
        bulk_write(self.client, upsert_actions(target, chunks), self._es)
        return len(chunks)

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        ids = list(chunk_ids)
        index = self._read_index()
        if not ids or index is None:
            return 0
        self._wrote(index)
        results = bulk_write(self.client, delete_actions(index, ids), self._es)
        return sum(1 for info in results if info.get("result") == "deleted")

    def delete_chunks_of(self, doc_id: str) -> int:
        """Delete every chunk of a document, orphans no id list knows about included (scan +
        bulk delete: ``_delete_by_query`` needs the optional ``reindex`` module)."""
        return self.delete_chunks(self.chunk_ids_of(doc_id))

    def _chunk_hits(self, query: dict[str, Any], source: Any = False) -> Iterator[dict]:
        index = self._read_index()
        if index is None:
            return iter(())
        self._refresh(index)
        return scan(self.client, index, query, "chunk_id", source)

    def chunk_ids_of(self, doc_id: str) -> set[str]:
        return {hit["_id"] for hit in self._chunk_hits({"term": {"doc_id": doc_id}})}

    def find_chunks(
        self, *, text_hashes: Sequence[str] = (), band_keys: Sequence[str] = ()
    ) -> list[ChunkCandidate]:
        should = [
            {"terms": {f: list(v)}}
            for f, v in (("text_hash", text_hashes), ("band_keys", band_keys))
            if v
        ]
        if not should:
            return []
        query = {"bool": {"should": should, "minimum_should_match": 1}}
        source = ["chunk_id", "doc_id", "text_hash", "signature", "source"]
        return [
            ChunkCandidate(
                chunk_id=s["chunk_id"],
                doc_id=s["doc_id"],
                text_hash=s["text_hash"],
                signature=unb64(s.get("signature")),
                source=s.get("source", ""),
            )
            for s in (hit["_source"] for hit in self._chunk_hits(query, source))
        ]

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
        """kNN with pre-filtering, BM25, or both fused (``mode``; see ``es_search``)."""
        index = self._read_index()
        if index is None:
            return []
        self._refresh(index)
        field = vector_field(self._gens.cached_meta(index) or {})
        return self._searcher.search(
            index, vector, k, filters, text=text, mode=mode, fusion=fusion, field=field
        )

    def stats(self) -> StoreStats:
        """Counts and the chunk-id digest, streamed from the cluster in id order."""
        index = self._read_index()
        digest, chunks = hashlib.sha256(), 0
        if index is not None:
            self._refresh(index, ledger_name(index), force=True)
            for hit in scan(self.client, index, {"match_all": {}}, "chunk_id"):
                digest.update(("\n" if chunks else "").encode() + hit["_id"].encode())
                chunks += 1
        identity = self._gens.identity(index) if index else None
        return StoreStats(
            documents=self._count_documents(index),
            chunks=chunks,
            chunk_ids_sha256=digest.hexdigest(),
            model_id=identity[0] if identity else None,
            dimension=identity[1] if identity else None,
        )

    def _count_documents(self, index: str | None) -> int:
        if index is None:
            return 0
        with translated("count"):
            response = self.client.count(
                index=ledger_name(index), query={"term": {"status": DocStatus.INDEXED.value}}
            )
        return int(response["count"])

    # --- ledger -------------------------------------------------------------------------------

    def _ledger(self) -> str | None:
        index = self._read_index()
        return ledger_name(index) if index else None

    def get_document(self, doc_id: str) -> DocumentRecord | None:
        ledger = self._ledger()
        if ledger is None:
            return None
        with translated("get document"):
            try:
                found = self.client.get(index=ledger, id=doc_id)
            except NotFoundError:
                return None
        return record_from_source(found["_source"])

    def put_document(self, record: DocumentRecord) -> None:
        ledger = ledger_name(self._require_target())
        self._wrote(ledger)
        with translated("put document"):
            self.client.index(index=ledger, id=record.doc_id, document=record_source(record))

    def delete_document(self, doc_id: str) -> None:
        ledger = self._ledger()
        if ledger is None:
            return
        self._wrote(ledger)
        with translated("delete document"):
            try:
                self.client.delete(index=ledger, id=doc_id)
            except NotFoundError:
                return

    def _ledger_hits(self, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
        ledger = self._ledger()
        if ledger is None:
            return iter(())
        self._refresh(ledger)
        return scan(self.client, ledger, query, "doc_id", True)

    def iter_documents(self) -> Iterator[DocumentRecord]:
        for hit in self._ledger_hits({"match_all": {}}):
            yield record_from_source(hit["_source"])

    def find_documents(
        self, *, text_hash: str | None = None, band_keys: Sequence[str] = ()
    ) -> list[DocumentRecord]:
        query = dedup_candidates_query(text_hash, band_keys)
        if query is None:
            return []
        return [record_from_source(hit["_source"]) for hit in self._ledger_hits(query)]

    def close(self) -> None:
        self.client.close()
