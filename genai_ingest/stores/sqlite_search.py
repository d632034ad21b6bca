"""Exact kNN for the SQLite store: the in-memory matrix of every stored vector row, the
best-row score per chunk, and the SQL of search filters.

A chunk's ``vector`` BLOB holds its ``all_vectors``: the chunk vector then one row per
sentence window, ``(1 + n) * dimension`` float32 values (a database written before windows
holds one row per chunk, which reads the same way)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from genai_ingest.models import SearchHit
from genai_ingest.stores.base import FILTERABLE_FIELDS

#: Fields a search may filter on: the store contract's, plus the citation fields (a
#: ``headings`` filter matches any heading of a chunk's path).
SQLITE_FILTERABLE_FIELDS = (*FILTERABLE_FIELDS, "page_start", "page_end", "headings")


def in_clause(values: Sequence[Any]) -> str:
    """``?,?,...``: one placeholder per value."""
    return ",".join("?" * len(values))


def vector_blob(rows: np.ndarray) -> bytes:
    """The stored form of a chunk's vector rows (``all_vectors``)."""
    return np.ascontiguousarray(rows, np.float32).tobytes()


@dataclass(frozen=True)
class VectorMatrix:
    """Every stored vector row, chunk by chunk: chunk ``i`` owns rows ``starts[i]`` up to the
    next start."""

    ids: list[str]
    starts: np.ndarray
    rows: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[str, bytes]], dimension: int) -> VectorMatrix:
        """From ``(chunk_id, vector blob)`` rows, each blob a whole number of vectors."""
        row_bytes = 4 * dimension
        counts = np.fromiter((len(blob) // row_bytes for _, blob in rows), np.int64, len(rows))
        starts = np.zeros(len(rows), np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        matrix = np.frombuffer(b"".join(blob for _, blob in rows), np.float32)
        return cls([r[0] for r in rows], starts, matrix.reshape(-1, dimension))

    def best_scores(self, query: np.ndarray) -> np.ndarray:
        """Per chunk, the best dot product of the query with any of its rows."""
        scores = self.rows @ np.asarray(query, np.float32)
        if len(scores) == len(self.ids):  # one row per chunk: nothing to reduce
            return scores
        return np.maximum.reduceat(scores, self.starts)

    def top(self, query: np.ndarray, k: int, allowed: set[str] | None) -> list[tuple[str, float]]:
        """The k best ``(chunk_id, score)``, best first; ``allowed`` limits the chunks."""
        scores = self.best_scores(query)
        if allowed is not None:
            mask = np.fromiter((i in allowed for i in self.ids), bool, len(self.ids))
            scores = np.where(mask, scores, -np.inf)
        top = _top_k(scores, k)
        return [(self.ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first, ties by index: what a stable full sort gives,
    at the cost of a partition (the candidates are every score at least the k-th best)."""
    if k < len(scores):
        kth = -np.partition(-scores, k - 1)[k - 1]
        candidates = np.flatnonzero(scores >= kth)
        return candidates[np.argsort(-scores[candidates], kind="stable")][:k]
    return np.argsort(-scores, kind="stable")


def search_hit(chunk_id: str, score: float, fields: dict[str, Any]) -> SearchHit:
    """A hit from a chunk's stored fields (``chunks.fields``)."""
    return SearchHit(
        doc_id=fields["doc_id"],
        chunk_id=chunk_id,
        source=fields["source"],
        score=score,
        text=fields["text"],
        metadata={k: v for k, v in fields.items() if k not in ("text", "band_keys")},
    )


def filter_where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause on ``chunks.fields`` (JSON) and its parameters; a list value
    means "any of". Raises ``ValueError`` for a field one cannot filter on."""
    clauses, params = [], []
    for key, value in filters.items():
        if key not in SQLITE_FILTERABLE_FIELDS:
            raise ValueError(f"cannot filter on {key!r}; filterable: {SQLITE_FILTERABLE_FIELDS}")
        values = list(value) if isinstance(value, list | tuple | set) else [value]
        if key == "headings":  # any heading of the chunk's path
            clauses.append(
                "EXISTS (SELECT 1 FROM json_each(fields, '$.headings') "
                f"WHERE value IN ({in_clause(values)}))"
            )
        else:
            clauses.append(f"json_extract(fields, '$.{key}') IN ({in_clause(values)})")
        params += values
    return "WHERE " + " AND ".join(clauses), params
