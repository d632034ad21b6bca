"""kNN, BM25 and hybrid search on a chunk index.

kNN runs with the metadata filters inside ``knn.filter`` (pre-filtering: k hits even when few
chunks match); BM25 is a ``match`` query on ``text`` with the same filters. Hybrid search runs
both, ``fusion.candidates`` deep, and fuses them here with ``genai_ingest.stores.fusion``, the
function the embedded store uses: Elasticsearch's ``rrf`` retriever is licensed and missing on the
JDK-less build, and fusing client-side makes both stores rank the same hits the same way."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch

from genai_ingest.config import ElasticsearchSettings, FusionSettings, SearchMode
from genai_ingest.models import SearchHit
from genai_ingest.stores.base import FILTERABLE_FIELDS, query_text_for
from genai_ingest.stores.es_client import response_error, translated
from genai_ingest.stores.es_mapping import (
    CITATION_MAPPING,
    LEGACY_VECTOR_FIELD,
    PASSAGES_FIELD,
    VECTOR_FIELD,
)
from genai_ingest.stores.fusion import candidates, fuse_dense_lexical
from genai_ingest.stores.lexical import informative_terms, query_terms

#: Fields a search may filter on: the store contract's, plus the citation fields.
ES_FILTERABLE_FIELDS = (*FILTERABLE_FIELDS, *CITATION_MAPPING)
HIT_SOURCE = {"excludes": ["band_keys", "signature", PASSAGES_FIELD, LEGACY_VECTOR_FIELD]}
#: BM25 ties in the order the embedded store breaks them (by chunk id).
LEXICAL_SORT = ["_score", {"chunk_id": "asc"}]


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


def match_query(text: str, clauses: list[dict[str, Any]]) -> dict[str, Any]:
    """BM25 on the chunk text (any word of ``text``), within the filter clauses."""
    return {"bool": {"must": {"match": {"text": text}}, "filter": clauses}}


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
    """Searches one client's chunk indexes."""

    def __init__(self, client: Elasticsearch, es: ElasticsearchSettings) -> None:
        self.client = client
        self._es = es

    def search(
        self,
        index: str,
        vector: np.ndarray | None,
        k: int,
        filters: dict[str, Any] | None = None,
        *,
        text: str | None = None,
        mode: SearchMode = SearchMode.DENSE,
        fusion: FusionSettings | None = None,
        field: str = VECTOR_FIELD,
    ) -> list[SearchHit]:
        """Dense (kNN on ``field``), lexical (BM25 of ``text``) or hybrid (both, fused: scores
        are then fusion scores)."""
        mode = SearchMode(mode)
        clauses = filter_clauses(filters)
        if mode is SearchMode.DENSE:
            return self._knn(index, vector, k, clauses, field)
        fusion = fusion or FusionSettings()
        depth = k if mode is SearchMode.LEXICAL else candidates(fusion, k)
        lexical = self._bm25(index, query_text_for(mode, text), depth, clauses)
        if mode is SearchMode.LEXICAL:
            return lexical
        dense = self._knn(index, vector, depth, clauses, field)
        hits = {h.chunk_id: h for h in (*lexical, *dense)}
        fused = fuse_dense_lexical(
            [h.chunk_id for h in dense], [h.chunk_id for h in lexical], fusion, k
        )
        return [replace(hits[chunk_id], score=score) for chunk_id, score in fused]

    def _knn(
        self,
        index: str,
        vector: np.ndarray | None,
        k: int,
        clauses: list[dict[str, Any]],
        field: str,
    ) -> list[SearchHit]:
        if vector is None:
            raise ValueError("dense and hybrid search need the query vector")
        knn = knn_clause(vector, k, self._es.num_candidates, clauses, field)
        with translated("search"):
            response = self.client.search(index=index, knn=knn, size=k, source=HIT_SOURCE)
        return [
            to_hit(h, raw_similarity(h["_score"], self._es.similarity))
            for h in response["hits"]["hits"]
        ]

    def _bm25(
        self, index: str, text: str, k: int, clauses: list[dict[str, Any]]
    ) -> list[SearchHit]:
        terms = self._informative_terms(index, query_terms(text))
        if not terms:
            return []
        with translated("search"):
            response = self.client.search(
                index=index,
                query=match_query(" ".join(terms), clauses),
                sort=LEXICAL_SORT,
                size=k,
                source=HIT_SOURCE,
            )
        return [to_hit(h, h["_score"]) for h in response["hits"]["hits"]]

    def _informative_terms(self, index: str, terms: list[str]) -> list[str]:
        """``terms`` less those in at least half of the chunks (``genai_ingest.stores.lexical``):
        the document frequencies and the chunk count in one ``msearch``."""
        if not terms:
            return []
        queries = [*({"term": {"text": term}} for term in terms), {"match_all": {}}]
        searches: list[dict[str, Any]] = []
        for query in queries:
            searches += [{"index": index}, {"size": 0, "track_total_hits": True, "query": query}]
        with translated("search"):
            responses = self.client.msearch(searches=searches)["responses"]
        counts = []
        for response in responses:
            if "error" in response:
                raise response_error(response, "search")
            counts.append(response["hits"]["total"]["value"])
        return informative_terms(terms, dict(zip(terms, counts, strict=False)), counts[-1])
