"""kNN and hybrid search on a chunk index.

kNN runs with the metadata filters inside ``knn.filter`` (pre-filtering: k hits even when few
chunks match). Hybrid search fuses BM25 and kNN with the RRF retriever where the server has it;
a server without it (the JDK-less build: the retriever lives in an x-pack module; or a licence
that refuses it) answers 400 ``unknown retriever [rrf]`` or 403, and from then on this searcher
uses the documented fallback: a boosted ``query`` + ``knn`` combination (0.3 / 0.7)."""

from __future__ import annotations

from typing import Any

import numpy as np
from elasticsearch import ApiError, Elasticsearch, TransportError

from genai_ingest.config import ElasticsearchSettings
from genai_ingest.models import SearchHit
from genai_ingest.stores.base import FILTERABLE_FIELDS
from genai_ingest.stores.es_client import api_error, translated
from genai_ingest.stores.es_mapping import (
    CITATION_MAPPING,
    LEGACY_VECTOR_FIELD,
    PASSAGES_FIELD,
    VECTOR_FIELD,
)

#: Fields a search may filter on: the store contract's, plus the citation fields.
ES_FILTERABLE_FIELDS = (*FILTERABLE_FIELDS, *CITATION_MAPPING)
HIT_SOURCE = {"excludes": ["band_keys", "signature", PASSAGES_FIELD, LEGACY_VECTOR_FIELD]}
KEYWORD_BOOST, KNN_BOOST = 0.3, 0.7


def raw_similarity(score: float, similarity: str) -> float:
    """Elasticsearch's kNN ``_score`` turned back into the dot product of unit vectors, the
    score ``SQLiteVectorStore`` returns (on nested passages: the best passage's score)."""
    if similarity in ("dot_product", "cosine"):
        return 2.0 * score - 1.0
    if similarity == "max_inner_product":
        return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score
    return 1.0 - (1.0 / score - 1.0) / 2.0  # l2_norm: score = 1 / (1 + |a-b|^2)


def filter_clauses(filters: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Exact-match filters as ``term``/``terms`` clauses (a list value means "any of")."""
    clauses = []
    for key, value in (filters or {}).items():
        if key not in ES_FILTERABLE_FIELDS:
            raise ValueError(f"cannot filter on {key!r}; filterable: {ES_FILTERABLE_FIELDS}")
        if isinstance(value, list | tuple | set):
            clauses.append({"terms": {key: list(value)}})
        else:
            clauses.append({"term": {key: value}})
    return clauses


def knn_clause(
    vector: np.ndarray,
    k: int,
    num_candidates: int,
    clauses: list[dict[str, Any]],
    field: str = VECTOR_FIELD,
) -> dict[str, Any]:
    """The ``knn`` section: ``num_candidates`` per shard, at least k. On the nested passage
    vectors a chunk scores by its best passage and k distinct chunks come back; the filter
    clauses apply to the chunk's (top-level) fields."""
    knn: dict[str, Any] = {
        "field": field,
        "query_vector": np.asarray(vector, np.float32).tolist(),
        "k": k,
        "num_candidates": max(num_candidates, k),
    }
    if clauses:
        knn["filter"] = clauses
    return knn


def is_rrf_unavailable(exc: ApiError) -> bool:
    """The server does not know the RRF retriever (400) or the licence refuses it (403)."""
    return exc.status_code == 403 or (exc.status_code == 400 and "[rrf]" in str(exc.body))


def to_hit(hit: dict[str, Any], score: float) -> SearchHit:
    """A search hit: the chunk's text, and every other returned field as metadata."""
    fields = hit["_source"]
    return SearchHit(
        doc_id=fields["doc_id"],
        chunk_id=hit["_id"],
        source=fields["source"],
        score=float(score),
        text=fields["text"],
        metadata={key: value for key, value in fields.items() if key != "text"},
    )


class ChunkSearcher:
    """Searches one client's chunk indexes; remembers whether the server has RRF."""

    def __init__(self, client: Elasticsearch, es: ElasticsearchSettings) -> None:
        self.client = client
        self._es = es
        self.rrf_supported: bool | None = None  # unknown until the first hybrid search

    def search(
        self,
        index: str,
        vector: np.ndarray,
        k: int,
        filters: dict[str, Any] | None = None,
        text: str | None = None,
        field: str = VECTOR_FIELD,
    ) -> list[SearchHit]:
        """kNN on ``field``; with ``hybrid`` on and ``text`` given, BM25 + kNN fused (scores
        are then fusion scores, not similarities)."""
        clauses = filter_clauses(filters)
        knn = knn_clause(vector, k, self._es.num_candidates, clauses, field)
        if self._es.hybrid and text:
            return self._hybrid(index, knn, text, k, clauses)
        with translated("search"):
            response = self.client.search(index=index, knn=knn, size=k, source=HIT_SOURCE)
        return [
            to_hit(h, raw_similarity(h["_score"], self._es.similarity))
            for h in response["hits"]["hits"]
        ]

    def _hybrid(
        self, index: str, knn: dict[str, Any], text: str, k: int, clauses: list[dict[str, Any]]
    ) -> list[SearchHit]:
        match = {"bool": {"must": {"match": {"text": text}}, "filter": clauses}}
        if self.rrf_supported is not False:
            hits = self._rrf(index, knn, match, k)
            if hits is not None:
                return hits
        match["bool"]["boost"] = KEYWORD_BOOST
        with translated("search"):
            response = self.client.search(
                index=index,
                query=match,
                knn={**knn, "boost": KNN_BOOST},
                size=k,
                source=HIT_SOURCE,
            )
        return [to_hit(h, h["_score"]) for h in response["hits"]["hits"]]

    def _rrf(
        self, index: str, knn: dict[str, Any], match: dict[str, Any], k: int
    ) -> list[SearchHit] | None:
        """RRF-fused hits, or None when the server turns out not to have the retriever."""
        retriever = {
            "rrf": {
                "retrievers": [{"standard": {"query": match}}, {"knn": knn}],
                "rank_window_size": max(self._es.num_candidates, k),
            }
        }
        try:
            response = self.client.search(
                index=index, retriever=retriever, size=k, source=HIT_SOURCE
            )
        except ApiError as exc:
            if not is_rrf_unavailable(exc):
                raise api_error(exc, "search") from exc
            self.rrf_supported = False
            return None
        except TransportError as exc:
            raise api_error(exc, "search") from exc
        self.rrf_supported = True
        return [to_hit(h, h["_score"]) for h in response["hits"]["hits"]]
