"""The production store: chunks as Elasticsearch dense vectors, the ledger and (optionally) the
DLQ in companion indexes. Mirrors ``SQLiteVectorStore`` semantics; works with 8.x and 9.x servers.

Index layout under the alias ``A`` (``settings.elasticsearch.index``)::

    A-v{n}-{model-slug}-{dims}          chunks of generation n     <- alias A
    A-v{n}-{model-slug}-{dims}-ledger   its document ledger        <- alias A-ledger
    A-dlq, A-dlq-raw                    dead letters and their raw bytes (base64)

A model or dimension change never touches the live generation: ``begin_reindex`` creates
generation n+1 (no alias), the pipeline fills it (every worker's ``ensure_index`` for that model
finds it), and ``swap_alias`` moves both aliases in one atomic ``update_aliases`` call.

Refresh: the pipeline reads its own writes within a run (dedup candidates, ``chunk_ids_of``,
``find_documents``, DLQ listings are searches, which see only refreshed data), so every write
(chunk bulk, ledger row, DLQ entry) uses ``refresh="wait_for"``; ``swap_alias`` refreshes
explicitly before going live, ``delete_chunks_of`` uses ``refresh=True`` (no wait_for there).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError, helpers
from elasticsearch import __versionstr__ as client_version

from genai_ingest.config import ElasticsearchSettings, Settings
from genai_ingest.dlq import DeadLetter, EntryStatus, Failure, close_entry, merge_failure
from genai_ingest.errors import (
    EmbeddingRejected,
    IngestError,
    ModelMismatch,
    Stage,
    StoreUnavailable,
    SystemFault,
)
from genai_ingest.models import (
    ChunkCandidate,
    DocStatus,
    DocumentRecord,
    EmbeddedChunk,
    SearchHit,
    StoreStats,
)
from genai_ingest.policies import RetryPolicy
from genai_ingest.redact import redact, register_secret
from genai_ingest.stores.base import FILTERABLE_FIELDS, chunk_fields

VECTOR_FIELD = "vector"
SCHEMA_VERSION = 1
PAGE_SIZE = 2000
PIT_KEEP_ALIVE = "2m"
DEFAULT_NUM_CANDIDATES = 100
#: Raw bytes larger than this are not copied into the DLQ index; the entry keeps its sha256 and
#: the source URI as the pointer (a bulk request over ``http.max_content_length`` would fail).
MAX_RAW_DLQ_BYTES = 32 * 1024 * 1024

_KEYWORD = {"type": "keyword"}
_KEYWORD_FIELDS = (
    "chunk_id",
    "doc_id",
    "source",
    "source_type",
    "version",
    "parser",
    "language",
    "format",
    "section",
    "text_hash",
    "band_keys",
)
#: Bulk item error types that the same document will hit again: not worth a retry.
PERMANENT_ERROR_TYPES = frozenset(
    {
        "mapper_parsing_exception",
        "document_parsing_exception",
        "strict_dynamic_mapping_exception",
        "illegal_argument_exception",
    }
)


def is_transient_status(status: int) -> bool:
    """Timeouts, back-pressure (429) and server-side failures: worth a retry."""
    return status in (408, 429) or status >= 500


# --- pure functions: names, mappings, bulk actions, error classification ----------------------


def model_slug(model_id: str) -> str:
    """A lowercase, index-name-safe form of a model id (``BAAI/bge-m3`` -> ``baai-bge-m3``)."""
    return re.sub(r"[^a-z0-9]+", "-", model_id.lower()).strip("-")[:48] or "model"


def physical_index_name(alias: str, generation: int, model_id: str, dims: int) -> str:
    """``{alias}-v{n}-{model-slug}-{dims}``: one physical chunk index per generation."""
    return f"{alias}-v{generation}-{model_slug(model_id)}-{dims}"


def ledger_name(index: str) -> str:
    """The companion ledger of a chunk index (or of the alias: ``{alias}-ledger``)."""
    return f"{index}-ledger"


def generation_of(alias: str, index: str) -> int | None:
    """The generation number in a physical chunk index name, None for other names."""
    match = re.fullmatch(rf"{re.escape(alias)}-v(\d+)-.+-\d+", index)
    return int(match.group(1)) if match and not index.endswith("-ledger") else None


def index_mapping(model_id: str, dims: int, es: ElasticsearchSettings) -> dict[str, Any]:
    """Mappings of a chunk index: the vector (excluded from ``_source``), text, keyword
    metadata, and the model identity in ``_meta``."""
    properties: dict[str, Any] = {name: _KEYWORD for name in _KEYWORD_FIELDS}
    properties.update(
        {
            "text": {"type": "text"},
            "chunk_index": {"type": "integer"},
            "token_count": {"type": "integer"},
            "signature": {"type": "binary"},
            VECTOR_FIELD: {
                "type": "dense_vector",
                "dims": dims,
                "index": True,
                "similarity": es.similarity,
                "index_options": {"type": es.index_options},
            },
        }
    )
    return {
        "dynamic": "strict",
        "_meta": {
            "kind": "chunks",
            "model_id": model_id,
            "dimension": dims,
            "schema": SCHEMA_VERSION,
        },
        "_source": {"excludes": [VECTOR_FIELD]},
        "properties": properties,
    }


def ledger_mapping() -> dict[str, Any]:
    """Mappings of a ledger index: lookup fields indexed, the full record stored as-is."""
    return {
        "dynamic": "strict",
        "_meta": {"kind": "ledger", "schema": SCHEMA_VERSION},
        "properties": {
            "doc_id": _KEYWORD,
            "status": _KEYWORD,
            "text_hash": _KEYWORD,
            "band_keys": _KEYWORD,
            "signature": {"type": "binary"},
            "record": {"type": "object", "enabled": False},
        },
    }


def dlq_mapping() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "properties": {
            "entry_id": _KEYWORD,
            "status": _KEYWORD,
            "stage": _KEYWORD,
            "error_class": _KEYWORD,
            "first_failed_at": {"type": "date"},
            "last_failed_at": {"type": "date"},
            "entry": {"type": "object", "enabled": False},
        },
    }


def dlq_raw_mapping() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "properties": {"data": {"type": "binary"}, "size": {"type": "long"}},
    }


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def _unb64(data: str | None) -> bytes | None:
    return base64.b64decode(data) if data else None


def chunk_source(item: EmbeddedChunk) -> dict[str, Any]:
    """The indexed document of one chunk: ``chunk_fields`` + signature + vector."""
    vector = np.asarray(item.vector, np.float32)
    if not np.all(np.isfinite(vector)):
        raise EmbeddingRejected(
            f"chunk {item.chunk.chunk_id}: vector has NaN/inf values", stage=Stage.STORE
        )
    return {
        **chunk_fields(item),
        "signature": _b64(item.chunk.signature),
        VECTOR_FIELD: vector.tolist(),
    }


def upsert_actions(index: str, chunks: Iterable[EmbeddedChunk]) -> Iterator[dict[str, Any]]:
    """Bulk ``index`` actions (create or overwrite) with ``_id`` = chunk id."""
    for item in chunks:
        yield {
            "_op_type": "index",
            "_index": index,
            "_id": item.chunk.chunk_id,
            "_source": chunk_source(item),
        }


def delete_actions(index: str, ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Bulk ``delete`` actions by chunk id."""
    for chunk_id in dict.fromkeys(ids):
        yield {"_op_type": "delete", "_index": index, "_id": chunk_id}


def bulk_kwargs(es: ElasticsearchSettings) -> dict[str, Any]:
    """``helpers.streaming_bulk`` options: batches bounded by count and bytes; per-item errors
    returned (not raised) so they can be classified; 429s retried by our policy, with jitter."""
    return {
        "chunk_size": es.bulk_max_docs,
        "max_chunk_bytes": es.bulk_max_bytes,
        "raise_on_error": False,
        "raise_on_exception": True,
        "max_retries": 0,
        "refresh": "wait_for",
    }


def _error_chain(error: dict[str, Any] | str) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    node: Any = error
    while isinstance(node, dict):
        chain.append(node)
        node = node.get("caused_by")
    return chain


def classify_item_error(status: int, error: dict[str, Any] | str) -> IngestError:
    """The pipeline error for one failed bulk item: mapping/dimension problems are permanent
    (the same chunk fails the same way), everything else is transient."""
    chain = _error_chain(error)
    reason = "; ".join(f"{e.get('type')}: {e.get('reason')}" for e in chain) or str(error)
    if not is_transient_status(status) and any(
        e.get("type") in PERMANENT_ERROR_TYPES for e in chain
    ):
        return EmbeddingRejected(f"rejected by Elasticsearch: {reason}", stage=Stage.STORE)
    return StoreUnavailable(f"bulk item failed ({status}): {reason}", stage=Stage.STORE)


def api_error(exc: Exception, action: str) -> IngestError:
    """A client exception as a pipeline error: transport failures, 408/429/5xx are transient."""
    if isinstance(exc, ApiError) and not is_transient_status(exc.status_code):
        return SystemFault(
            redact(f"elasticsearch {action}: {exc.status_code} {exc.message}"), stage=Stage.STORE
        )
    return StoreUnavailable(redact(f"elasticsearch {action}: {exc}"), stage=Stage.STORE)


def compat_mimetype(mimetype: str, major: int) -> str:
    """``application/json`` -> ``application/vnd.elasticsearch+json; compatible-with=N``."""
    return re.sub(
        r"application/(json|x-ndjson)\b",
        rf"application/vnd.elasticsearch+\1; compatible-with={major}",
        mimetype,
    )


def raw_similarity(score: float, similarity: str) -> float:
    """Elasticsearch's kNN ``_score`` turned back into the dot product of unit vectors, the
    score ``SQLiteVectorStore`` returns."""
    if similarity in ("dot_product", "cosine"):
        return 2.0 * score - 1.0
    if similarity == "max_inner_product":
        return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score
    return 1.0 - (1.0 / score - 1.0) / 2.0  # l2_norm: score = 1 / (1 + |a-b|^2)


def _filter_clauses(filters: dict[str, Any] | None) -> list[dict[str, Any]]:
    clauses = []
    for key, value in (filters or {}).items():
        if key not in FILTERABLE_FIELDS:
            raise ValueError(f"cannot filter on {key!r}; filterable: {FILTERABLE_FIELDS}")
        if isinstance(value, list | tuple | set):
            clauses.append({"terms": {key: list(value)}})
        else:
            clauses.append({"term": {key: value}})
    return clauses


# --- the client -------------------------------------------------------------------------------


class CompatElasticsearch(Elasticsearch):
    """The official client, speaking the REST API version of the server it finds.

    A 9.x client sends ``compatible-with=9``, which 8.x servers refuse; 8.x and 9.x servers
    both accept ``compatible-with=8``. The first request (``GET /``) goes out as 8, then the
    client uses ``min(server major, client major)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rest_major: int | None = None

    def perform_request(
        self,
        method: str,
        path: str,
        *,
        headers: Any = None,
        **kwargs: Any,
    ) -> Any:
        if self.rest_major is None and path != "/":
            server = int(str(self.info()["version"]["number"]).split(".")[0])
            self.rest_major = min(server, int(client_version.split(".")[0]))
        major = self.rest_major or 8
        headers = {k: compat_mimetype(v, major) for k, v in (headers or {}).items()}
        return super().perform_request(method, path, headers=headers, **kwargs)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def client_from_settings(settings: Settings) -> CompatElasticsearch:
    """A client for ``settings.store_url`` (or ``cloud_id``); every credential is registered
    with ``redact`` before it can reach a log line."""
    es = settings.elasticsearch
    kwargs: dict[str, Any] = {
        "request_timeout": es.request_timeout_s,
        "verify_certs": es.verify_certs,
        "max_retries": 2,
        "retry_on_timeout": True,
    }
    if es.cloud_id:
        kwargs["cloud_id"] = es.cloud_id
    else:
        url = settings.store_url or ""
        register_secret(urlsplit(url).password)
        kwargs["hosts"] = [url]
    if es.ca_certs:
        kwargs["ca_certs"] = str(es.ca_certs)
    api_key, password = _secret(es.api_key), _secret(es.password)
    register_secret(api_key)
    register_secret(password)
    if api_key:
        kwargs["api_key"] = api_key
    elif es.username and password:
        kwargs["basic_auth"] = (es.username, password)
    return CompatElasticsearch(**kwargs)


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Client exceptions as pipeline errors (``StoreUnavailable`` for outages)."""
    try:
        yield
    except (ApiError, TransportError) as exc:
        raise api_error(exc, action) from exc


def _create_index(client: Elasticsearch, index: str, mappings: dict[str, Any]) -> None:
    """Create an index unless it exists (safe when several workers race)."""
    with _translated(f"create {index}"):
        try:
            client.indices.create(index=index, mappings=mappings)
        except ApiError as exc:
            if exc.error != "resource_already_exists_exception":
                raise


def _scan(
    client: Elasticsearch,
    index: str,
    query: dict[str, Any],
    sort_field: str,
    source: Any = False,
) -> Iterator[dict[str, Any]]:
    """Every hit of ``query``, ascending by ``sort_field``: point-in-time + ``search_after``
    (consistent and unbounded, unlike ``from``/``size``)."""
    with _translated(f"scan {index}"):
        pit_id = client.open_point_in_time(index=index, keep_alive=PIT_KEEP_ALIVE)["id"]
        try:
            after: list[Any] | None = None
            while True:
                page = client.search(
                    pit={"id": pit_id, "keep_alive": PIT_KEEP_ALIVE},
                    query=query,
                    sort=[{sort_field: "asc"}],
                    search_after=after,
                    size=PAGE_SIZE,
                    source=source,
                    track_total_hits=False,
                )
                pit_id = page.get("pit_id", pit_id)
                hits = page["hits"]["hits"]
                yield from hits
                if len(hits) < PAGE_SIZE:
                    return
                after = hits[-1]["sort"]
        finally:
            client.close_point_in_time(id=pit_id)


# --- the vector store -------------------------------------------------------------------------


class ElasticsearchVectorStore:
    """``VectorStore`` on an Elasticsearch cluster (see the module docstring for the layout)."""

    def __init__(
        self,
        client: Elasticsearch,
        es: ElasticsearchSettings,
        write_policy: RetryPolicy,
        num_candidates: int = DEFAULT_NUM_CANDIDATES,
    ) -> None:
        self.client = client
        self.alias = es.index
        self._es = es
        self._write_policy = write_policy
        self._num_candidates = num_candidates
        self._target: str | None = None
        self._rrf_supported = True

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticsearchVectorStore:
        return cls(
            client_from_settings(settings),
            settings.elasticsearch,
            settings.policies.store_write,
            num_candidates=settings.elasticsearch.num_candidates,
        )

    # --- generations and the alias ------------------------------------------------------------

    def _alias_target(self, alias: str) -> str | None:
        with _translated(f"get alias {alias}"):
            try:
                found = self.client.indices.get_alias(name=alias)
            except NotFoundError:
                return None
        return next(iter(found), None)

    def _generations(self) -> dict[str, dict[str, Any]]:
        """``{physical index: _meta}`` of every chunk index under the alias."""
        with _translated("list generations"):
            found = self.client.indices.get_mapping(index=f"{self.alias}-v*")
        return {
            name: body["mappings"].get("_meta", {})
            for name, body in found.items()
            if generation_of(self.alias, name) is not None
        }

    def _pending(self, model_id: str, dims: int) -> str | None:
        """The newest generation newer than the live one built for this model, if any."""
        live = self._alias_target(self.alias)
        floor = (generation_of(self.alias, live) or 0) if live else 0
        candidates = {
            generation_of(self.alias, name) or 0: name
            for name, meta in self._generations().items()
            if (meta.get("model_id"), meta.get("dimension")) == (model_id, dims)
        }
        newer = [g for g in candidates if g > floor]
        return candidates[max(newer)] if newer else None

    def _create_generation(self, model_id: str, dims: int) -> str:
        generations = [generation_of(self.alias, n) or 0 for n in self._generations()]
        index = physical_index_name(self.alias, max(generations, default=0) + 1, model_id, dims)
        _create_index(self.client, index, index_mapping(model_id, dims, self._es))
        _create_index(self.client, ledger_name(index), ledger_mapping())
        return index

    def _identity_of(self, index: str) -> tuple[str, int] | None:
        with _translated(f"get mapping {index}"):
            try:
                found = self.client.indices.get_mapping(index=index)
            except NotFoundError:
                return None
        meta = next(iter(found.values()))["mappings"].get("_meta", {})
        return (meta["model_id"], int(meta["dimension"])) if "model_id" in meta else None

    def _read_index(self) -> str | None:
        """Where reads go: the write target once chosen, else the live generation."""
        return self._target or self._alias_target(self.alias)

    @property
    def write_index(self) -> str | None:
        """The physical chunk index this store writes to (None before ``ensure_index``)."""
        return self._target

    def live_index(self) -> str | None:
        """The physical chunk index behind the alias (what searchers see)."""
        return self._alias_target(self.alias)

    def index_identity(self) -> tuple[str, int] | None:
        index = self._read_index()
        return self._identity_of(index) if index else None

    def ensure_index(self, model_id: str, dimension: int) -> None:
        """Write to the generation built for this model: a pending rebuild, else the live
        index; the first generation is created and aliased at once. Any other live model
        raises ``ModelMismatch``: call ``begin_reindex`` to build a new generation."""
        live = self._alias_target(self.alias)
        pending = self._pending(model_id, dimension)
        if pending:
            self._target = pending
        elif live is None:
            self._target = self._create_generation(model_id, dimension)
            self._add_aliases(self._target, previous=None)
        elif self._identity_of(live) == (model_id, dimension):
            self._target = live
        else:
            identity = self._identity_of(live)
            raise ModelMismatch(
                f"index {live} holds vectors of {identity}; refusing {model_id} "
                f"({dimension} dims): build a new generation with begin_reindex, then swap_alias",
                stage=Stage.STORE,
            )

    def begin_reindex(self, model_id: str, dimension: int) -> str:
        """Create (or resume) generation n+1 for this model, unaliased, and write to it.
        Returns its physical name. Search through the alias keeps seeing the live index."""
        self._target = self._pending(model_id, dimension) or self._create_generation(
            model_id, dimension
        )
        return self._target

    def swap_alias(self, *, delete_previous: bool = False) -> str:
        """Make the write generation live: refresh it, then move the chunk and ledger aliases
        in one atomic ``update_aliases``. Optionally delete the previous generation."""
        target = self._require_target()
        live = self._alias_target(self.alias)
        if live != target:
            with _translated("refresh"):
                self.client.indices.refresh(index=[target, ledger_name(target)])
            self._add_aliases(target, previous=live)
            if delete_previous and live:
                with _translated("delete previous generation"):
                    self.client.indices.delete(index=[live, ledger_name(live)])
        return target

    def _add_aliases(self, index: str, previous: str | None) -> None:
        pairs = [(index, self.alias), (ledger_name(index), ledger_name(self.alias))]
        actions: list[dict[str, Any]] = [{"add": {"index": i, "alias": a}} for i, a in pairs]
        if previous:
            old = [(previous, self.alias), (ledger_name(previous), ledger_name(self.alias))]
            actions = [{"remove": {"index": i, "alias": a}} for i, a in old] + actions
        with _translated("update aliases"):
            self.client.indices.update_aliases(actions=actions)

    def drop(self) -> list[str]:
        """Delete every generation (chunks and ledgers) under the alias; returns the names."""
        with _translated("list indexes"):
            names = sorted(self.client.indices.get(index=f"{self.alias}-v*"))
        if names:
            with _translated("delete indexes"):
                self.client.indices.delete(index=names)
        self._target = None
        return names

    def _require_target(self) -> str:
        if self._target is None:
            raise ModelMismatch("index not initialised: call ensure_index", stage=Stage.STORE)
        return self._target

    def _check_write(self, chunks: Sequence[EmbeddedChunk]) -> str:
        """The write target, after checking its ``_meta`` against the vectors (every write)."""
        target = self._require_target()
        identity = self._identity_of(target)
        if identity is None:
            raise ModelMismatch(f"index {target} is gone or has no model", stage=Stage.STORE)
        for item in chunks:
            if item.vector.shape != (identity[1],):
                raise ModelMismatch(
                    f"vector of shape {item.vector.shape} for a {identity[1]}-dim index",
                    stage=Stage.STORE,
                )
        return target

    # --- bulk writes --------------------------------------------------------------------------

    def _bulk(self, actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send actions with ``streaming_bulk``; transient item failures (429 included) and
        outages are retried by the store-write policy (backoff + jitter), only the failed
        items again; a permanent item failure raises ``EmbeddingRejected`` at once."""
        done: list[dict[str, Any]] = []
        pending = list(actions)
        for attempt in self._write_policy.retrying():
            with attempt:
                self._bulk_pass(pending, done)
        return done

    def _bulk_pass(self, pending: list[dict[str, Any]], done: list[dict[str, Any]]) -> None:
        by_id = {action["_id"]: action for action in pending}
        retry: list[dict[str, Any]] = []
        with _translated("bulk"):
            for ok, item in helpers.streaming_bulk(
                self.client, list(pending), **bulk_kwargs(self._es)
            ):
                op, info = next(iter(item.items()))
                if ok or (op == "delete" and info.get("status") == 404):
                    done.append(info)
                    continue
                error = classify_item_error(info.get("status", 500), info.get("error", ""))
                if not error.replayable:
                    raise error
                retry.append(by_id[info["_id"]])
        pending[:] = retry
        if retry:
            raise StoreUnavailable(
                f"{len(retry)} bulk items failed transiently; retrying", stage=Stage.STORE
            )

    # --- chunks -------------------------------------------------------------------------------

    def upsert_chunks(self, chunks: Sequence[EmbeddedChunk]) -> int:
        if not chunks:
            return 0
        target = self._check_write(chunks)
        self._bulk(list(upsert_actions(target, chunks)))
        return len(chunks)

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        ids = list(chunk_ids)
        index = self._read_index()
        if not ids or index is None:
            return 0
        results = self._bulk(list(delete_actions(index, ids)))
        return sum(1 for info in results if info.get("result") == "deleted")

    def delete_chunks_of(self, doc_id: str) -> int:
        """Delete every chunk of a document by query (orphans no id list knows about)."""
        index = self._read_index()
        if index is None:
            return 0
        with _translated("delete by query"):
            response = self.client.delete_by_query(
                index=index, query={"term": {"doc_id": doc_id}}, refresh=True, conflicts="proceed"
            )
        return int(response["deleted"])

    def chunk_ids_of(self, doc_id: str) -> set[str]:
        index = self._read_index()
        if index is None:
            return set()
        hits = _scan(self.client, index, {"term": {"doc_id": doc_id}}, "chunk_id")
        return {hit["_id"] for hit in hits}

    def find_chunks(
        self, *, text_hashes: Sequence[str] = (), band_keys: Sequence[str] = ()
    ) -> list[ChunkCandidate]:
        index = self._read_index()
        should = [
            {"terms": {f: list(v)}}
            for f, v in (("text_hash", text_hashes), ("band_keys", band_keys))
            if v
        ]
        if index is None or not should:
            return []
        query = {"bool": {"should": should, "minimum_should_match": 1}}
        source = ["chunk_id", "doc_id", "text_hash", "signature"]
        return [
            ChunkCandidate(
                chunk_id=s["chunk_id"],
                doc_id=s["doc_id"],
                text_hash=s["text_hash"],
                signature=_unb64(s.get("signature")),
            )
            for s in (
                hit["_source"] for hit in _scan(self.client, index, query, "chunk_id", source)
            )
        ]

    # --- search -------------------------------------------------------------------------------

    def search(
        self,
        vector: np.ndarray,
        k: int = 5,
        filters: dict[str, Any] | None = None,
        *,
        text: str | None = None,
    ) -> list[SearchHit]:
        """kNN with the filters applied inside ``knn.filter`` (pre-filtering, so k hits come
        back even when few chunks match). With ``hybrid`` on and ``text`` given, BM25 and kNN
        are fused: an RRF retriever where the cluster allows it, else boosted ``query``+``knn``
        (scores are then fusion scores, not similarities)."""
        index = self._read_index()
        if index is None:
            return []
        clauses = _filter_clauses(filters)
        knn: dict[str, Any] = {
            "field": VECTOR_FIELD,
            "query_vector": np.asarray(vector, np.float32).tolist(),
            "k": k,
            "num_candidates": max(self._num_candidates, k),
        }
        if clauses:
            knn["filter"] = clauses
        if self._es.hybrid and text:
            return self._hybrid_search(index, knn, text, k, clauses)
        with _translated("search"):
            response = self.client.search(index=index, knn=knn, size=k, source=_HIT_SOURCE)
        return [
            self._hit(h, raw_similarity(h["_score"], self._es.similarity))
            for h in response["hits"]["hits"]
        ]

    def _hybrid_search(
        self, index: str, knn: dict[str, Any], text: str, k: int, clauses: list[dict[str, Any]]
    ) -> list[SearchHit]:
        match = {"bool": {"must": {"match": {"text": text}}, "filter": clauses}}
        if self._rrf_supported:
            retriever = {
                "rrf": {
                    "retrievers": [{"standard": {"query": match}}, {"knn": knn}],
                    "rank_window_size": max(self._num_candidates, k),
                }
            }
            try:
                response = self.client.search(
                    index=index, retriever=retriever, size=k, source=_HIT_SOURCE
                )
                return [self._hit(h, h["_score"]) for h in response["hits"]["hits"]]
            except ApiError as exc:  # older server, or a license without RRF
                if exc.status_code not in (400, 403):
                    raise api_error(exc, "search") from exc
                self._rrf_supported = False
            except TransportError as exc:
                raise api_error(exc, "search") from exc
        match["bool"]["boost"] = 0.3
        with _translated("search"):
            response = self.client.search(
                index=index, query=match, knn={**knn, "boost": 0.7}, size=k, source=_HIT_SOURCE
            )
        return [self._hit(h, h["_score"]) for h in response["hits"]["hits"]]

    @staticmethod
    def _hit(hit: dict[str, Any], score: float) -> SearchHit:
        fields = hit["_source"]
        return SearchHit(
            doc_id=fields["doc_id"],
            chunk_id=hit["_id"],
            source=fields["source"],
            score=float(score),
            text=fields["text"],
            metadata={key: value for key, value in fields.items() if key != "text"},
        )

    def stats(self) -> StoreStats:
        """Counts and the chunk-id digest, streamed from the cluster in id order."""
        index = self._read_index()
        digest, chunks = hashlib.sha256(), 0
        if index is not None:
            for hit in _scan(self.client, index, {"match_all": {}}, "chunk_id"):
                digest.update(("\n" if chunks else "").encode() + hit["_id"].encode())
                chunks += 1
        identity = self._identity_of(index) if index else None
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
        with _translated("count"):
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
        with _translated("get document"):
            try:
                found = self.client.get(index=ledger, id=doc_id)
            except NotFoundError:
                return None
        return record_from_source(found["_source"])

    def put_document(self, record: DocumentRecord) -> None:
        index = self._read_index()
        if index is None:
            raise ModelMismatch("index not initialised: call ensure_index", stage=Stage.STORE)
        with _translated("put document"):
            self.client.index(
                index=ledger_name(index),
                id=record.doc_id,
                document=record_source(record),
                refresh="wait_for",
            )

    def delete_document(self, doc_id: str) -> None:
        ledger = self._ledger()
        if ledger is None:
            return
        with _translated("delete document"):
            try:
                self.client.delete(index=ledger, id=doc_id, refresh="wait_for")
            except NotFoundError:
                return

    def iter_documents(self) -> Iterator[DocumentRecord]:
        ledger = self._ledger()
        if ledger is None:
            return
        for hit in _scan(self.client, ledger, {"match_all": {}}, "doc_id", True):
            yield record_from_source(hit["_source"])

    def find_documents(
        self, *, text_hash: str | None = None, band_keys: Sequence[str] = ()
    ) -> list[DocumentRecord]:
        ledger = self._ledger()
        should: list[dict[str, Any]] = []
        if text_hash:
            should.append({"term": {"text_hash": text_hash}})
        if band_keys:
            should.append({"terms": {"band_keys": list(band_keys)}})
        if ledger is None or not should:
            return []
        query = {
            "bool": {
                "filter": [{"term": {"status": DocStatus.INDEXED.value}}],
                "should": should,
                "minimum_should_match": 1,
            }
        }
        return [
            record_from_source(hit["_source"])
            for hit in _scan(self.client, ledger, query, "doc_id", True)
        ]

    def close(self) -> None:
        self.client.close()


_HIT_SOURCE = {"excludes": ["band_keys", "signature", VECTOR_FIELD]}


def record_source(record: DocumentRecord) -> dict[str, Any]:
    """A ledger row as an indexed document (the same JSON the embedded store keeps)."""
    data = dict(record.__dict__)
    data["status"] = record.status.value
    data["created_at"] = record.created_at.isoformat()
    data["updated_at"] = record.updated_at.isoformat()
    data.pop("signature")
    return {
        "doc_id": record.doc_id,
        "status": record.status.value,
        "text_hash": record.text_hash,
        "band_keys": list(record.band_keys),
        "signature": _b64(record.signature),
        "record": data,
    }


def record_from_source(source: dict[str, Any]) -> DocumentRecord:
    data = dict(source["record"])
    data["status"] = DocStatus(data["status"])
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    data["updated_at"] = datetime.fromisoformat(data["updated_at"])
    return DocumentRecord(**data, signature=_unb64(source.get("signature")))


# --- the dead-letter queue -----------------------------------------------------------------------


class ElasticsearchDeadLetterQueue:
    """``DeadLetterQueue`` in ``{alias}-dlq``; raw bytes base64 in ``{alias}-dlq-raw``, stored
    once per sha256 (up to ``MAX_RAW_DLQ_BYTES``; larger ones keep the source URI as pointer).
    Read-modify-write uses optimistic concurrency (``if_seq_no``), like a transaction."""

    def __init__(self, client: Elasticsearch, alias: str) -> None:
        self.client = client
        self.index = f"{alias}-dlq"
        self.raw_index = f"{alias}-dlq-raw"
        _create_index(client, self.index, dlq_mapping())
        _create_index(client, self.raw_index, dlq_raw_mapping())

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticsearchDeadLetterQueue:
        return cls(client_from_settings(settings), settings.elasticsearch.index)

    def _fetch(self, entry_id: str) -> tuple[DeadLetter | None, dict[str, int]]:
        with _translated("get dlq entry"):
            try:
                found = self.client.get(index=self.index, id=entry_id)
            except NotFoundError:
                return None, {"op_type": "create"}
        version = {"if_seq_no": found["_seq_no"], "if_primary_term": found["_primary_term"]}
        return DeadLetter.from_json(found["_source"]["entry"]), version

    def _update(
        self, entry_id: str, change: Callable[[DeadLetter | None], DeadLetter]
    ) -> DeadLetter:
        """Apply ``change`` to the stored entry; retried when another writer got there first."""
        for _ in range(10):
            existing, version = self._fetch(entry_id)
            entry = change(existing)
            try:
                self.client.index(
                    index=self.index,
                    id=entry.entry_id,
                    document=_dlq_source(entry),
                    refresh="wait_for",
                    **version,
                )
                return entry
            except ApiError as exc:
                if exc.status_code != 409:  # 409: another writer got there first
                    raise api_error(exc, "write dlq entry") from exc
            except TransportError as exc:
                raise api_error(exc, "write dlq entry") from exc
        raise StoreUnavailable(f"dlq entry {entry_id}: too many concurrent writers")

    def put(self, failure: Failure, raw: bytes | None) -> DeadLetter:
        if raw is not None and len(raw) <= MAX_RAW_DLQ_BYTES:
            self._put_raw(raw)
        return self._update(failure.doc_id, lambda existing: merge_failure(existing, failure, raw))

    def _put_raw(self, raw: bytes) -> None:
        sha = hashlib.sha256(raw).hexdigest()
        with _translated("write dlq raw"):
            try:
                self.client.index(
                    index=self.raw_index,
                    id=sha,
                    document={"data": _b64(raw), "size": len(raw)},
                    op_type="create",
                )
            except ApiError as exc:
                if exc.status_code != 409:  # already stored: same bytes
                    raise

    def get(self, entry_id: str) -> DeadLetter | None:
        return self._fetch(entry_id)[0]

    def entries(
        self,
        *,
        status: EntryStatus | None = EntryStatus.OPEN,
        stage: str | None = None,
        error_class: str | None = None,
    ) -> list[DeadLetter]:
        filters = [
            {"term": {field: str(value)}}
            for field, value in (("status", status), ("stage", stage), ("error_class", error_class))
            if value is not None
        ]
        hits = _scan(self.client, self.index, {"bool": {"filter": filters}}, "entry_id", True)
        return sorted(
            (DeadLetter.from_json(hit["_source"]["entry"]) for hit in hits),
            key=lambda e: (e.first_failed_at, e.entry_id),
        )

    def raw(self, entry_id: str) -> bytes | None:
        entry = self.get(entry_id)
        if entry is None or entry.raw_sha256 is None:
            return None
        with _translated("get dlq raw"):
            try:
                found = self.client.get(index=self.raw_index, id=entry.raw_sha256)
            except NotFoundError:
                return None
        return _unb64(found["_source"]["data"])

    def resolve(self, entry_id: str, note: str) -> None:
        self._update(
            entry_id, lambda e: close_entry(_required(entry_id, e), EntryStatus.RESOLVED, note)
        )

    def discard(self, entry_id: str, reason: str) -> None:
        self._update(
            entry_id, lambda e: close_entry(_required(entry_id, e), EntryStatus.DISCARDED, reason)
        )

    def set_overrides(self, entry_id: str, overrides: dict[str, Any]) -> None:
        def apply(existing: DeadLetter | None) -> DeadLetter:
            entry = _required(entry_id, existing)
            entry.overrides = {**entry.overrides, **overrides}
            return entry

        self._update(entry_id, apply)

    def drop(self) -> None:
        """Delete the DLQ indexes."""
        with _translated("delete dlq"):
            self.client.indices.delete(index=[self.index, self.raw_index], ignore_unavailable=True)

    def close(self) -> None:
        self.client.close()


def _required(entry_id: str, entry: DeadLetter | None) -> DeadLetter:
    if entry is None:
        raise KeyError(entry_id)
    return entry


def _dlq_source(entry: DeadLetter) -> dict[str, Any]:
    return {
        "entry_id": entry.entry_id,
        "status": entry.status.value,
        "stage": entry.stage,
        "error_class": entry.error_class,
        "first_failed_at": entry.first_failed_at.isoformat(),
        "last_failed_at": entry.last_failed_at.isoformat(),
        "entry": entry.to_json(),
    }
