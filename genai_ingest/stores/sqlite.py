"""The embedded default: one SQLite file (schema and connection: ``sqlite_db``) holding chunks,
vectors, the document ledger, claims and the DLQ (the last two: ``sqlite_dlq``). No server.
kNN is exact (numpy over every stored vector row, ``sqlite_search``); BM25 runs on an FTS5
index of the chunk text (``sqlite_lexical``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from genai_ingest.config import FusionSettings, SearchMode
from genai_ingest.failures.errors import ModelMismatch, Stage
from genai_ingest.models import (
    ChunkCandidate,
    DocStatus,
    DocumentRecord,
    EmbeddedChunk,
    SearchHit,
    StoreStats,
)
from genai_ingest.stores.base import (
    chunk_fields,
    chunk_ids_digest,
    citation_fields,
    query_text_for,
)
from genai_ingest.stores.fusion import candidates, fuse_dense_lexical
from genai_ingest.stores.lexical import informative_terms, query_terms
from genai_ingest.stores.sqlite_db import Database
from genai_ingest.stores.sqlite_lexical import (
    lexical_query,
    match_expression,
)
from genai_ingest.stores.sqlite_search import (
    VectorMatrix,
    filter_where,
    in_clause,
    search_hit,
    vector_blob,
)


def _record_to_json(record: DocumentRecord) -> str:
    data = dict(record.__dict__)
    data["status"] = record.status.value
    data["created_at"] = record.created_at.isoformat()
    data["updated_at"] = record.updated_at.isoformat()
    data.pop("signature")
    return json.dumps(data)


def _record_from_row(record_json: str, signature: bytes | None) -> DocumentRecord:
    data = json.loads(record_json)
    data["status"] = DocStatus(data["status"])
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    data["updated_at"] = datetime.fromisoformat(data["updated_at"])
    return DocumentRecord(**data, signature=signature)


class SQLiteVectorStore:
    """``VectorStore`` in a local SQLite file."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        self._db = Database(path, busy_timeout_s)
        self._matrix: VectorMatrix | None = None

    @property
    def path(self) -> Path:
        return self._db.path

    # --- index identity ---------------------------------------------------------------------

    def index_identity(self) -> tuple[str, int] | None:
        rows = dict(self._db.query("SELECT key, value FROM index_meta"))
        if "model_id" not in rows:
            return None
        return rows["model_id"], int(rows["dimension"])

    def ensure_index(self, model_id: str, dimension: int) -> None:
        with self._db.transaction() as conn:
            identity = self.index_identity()
            if identity is None:
                conn.executemany(
                    "INSERT INTO index_meta VALUES (?, ?)",
                    [("model_id", model_id), ("dimension", str(dimension))],
                )
            elif identity != (model_id, dimension):
                raise ModelMismatch(
                    f"index holds vectors of {identity[0]} ({identity[1]} dims); refusing "
                    f"{model_id} ({dimension} dims): rebuild it with genai-ingest reindex",
                    stage=Stage.STORE,
                )

    def _check_dimension(self, chunks: Sequence[EmbeddedChunk]) -> None:
        identity = self.index_identity()
        if identity is None:
            raise ModelMismatch("index not initialised: call ensure_index", stage=Stage.STORE)
        row = (identity[1],)
        for item in chunks:
            windows = item.window_vectors
            if np.shape(item.vector) != row or (windows is not None and windows.shape[1:] != row):
                raise ModelMismatch(
                    f"vector of shape {np.shape(item.vector)} (windows "
                    f"{None if windows is None else windows.shape}) for a {row[0]}-dim index",
                    stage=Stage.STORE,
                )

    # --- chunks ----------------------------------------------------------------------------

    def upsert_chunks(self, chunks: Sequence[EmbeddedChunk]) -> int:
        if not chunks:
            return 0
        self._check_dimension(chunks)
        ids = [c.chunk.chunk_id for c in chunks]
        with self._db.transaction() as conn:
            conn.execute(f"DELETE FROM chunk_bands WHERE chunk_id IN ({in_clause(ids)})", ids)
            conn.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(chunk_id) DO UPDATE SET"
                " doc_id=excluded.doc_id, text_hash=excluded.text_hash, fields=excluded.fields,"
                " signature=excluded.signature, vector=excluded.vector",
                [
                    (
                        c.chunk.chunk_id,
                        c.chunk.doc_id,
                        c.chunk.text_hash,
                        json.dumps({**chunk_fields(c), **citation_fields(c.chunk.metadata)}),
                        c.chunk.signature,
                        vector_blob(c.all_vectors),
                    )
                    for c in chunks
                ],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO chunk_bands VALUES (?, ?)",
                [(key, c.chunk.chunk_id) for c in chunks for key in c.chunk.band_keys],
            )
        self._matrix = None
        return len(chunks)

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        ids = list(chunk_ids)
        deleted = 0
        with self._db.transaction() as conn:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = in_clause(part)
                conn.execute(f"DELETE FROM chunk_bands WHERE chunk_id IN ({marks})", part)
                deleted += conn.execute(
                    f"DELETE FROM chunks WHERE chunk_id IN ({marks})", part
                ).rowcount
        if deleted:
            self._matrix = None
        return deleted

    def chunk_ids_of(self, doc_id: str) -> set[str]:
        return {
            r[0] for r in self._db.query("SELECT chunk_id FROM chunks WHERE doc_id=?", [doc_id])
        }

    def find_chunks(
        self, *, text_hashes: Sequence[str] = (), band_keys: Sequence[str] = ()
    ) -> list[ChunkCandidate]:
        rows: list[tuple] = []
        columns = (
            "c.chunk_id, c.doc_id, c.text_hash, c.signature, json_extract(c.fields, '$.source')"
        )
        if text_hashes:
            rows += self._db.query(
                f"SELECT {columns} FROM chunks c WHERE text_hash IN ({in_clause(text_hashes)})",
                list(text_hashes),
            )
        if band_keys:
            rows += self._db.query(
                f"SELECT {columns} FROM chunks c"
                " WHERE c.chunk_id IN (SELECT chunk_id FROM chunk_bands"
                f" WHERE band_key IN ({in_clause(band_keys)}))",
                list(band_keys),
            )
        return [ChunkCandidate(*row) for row in dict.fromkeys(rows)]

    # --- search ------------------------------------------------------------------------------

    def _load_matrix(self) -> VectorMatrix | None:
        if self._matrix is None:
            identity = self.index_identity()
            rows = self._db.query("SELECT chunk_id, vector FROM chunks ORDER BY chunk_id")
            if identity is None or not rows:
                return None
            self._matrix = VectorMatrix.from_rows(rows, identity[1])
        return self._matrix

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
        """Top-k chunks: dense (each chunk scored by its best vector row, chunk or window),
        lexical (BM25 on its text) or hybrid (both rankings fused,
        ``genai_ingest.stores.fusion``)."""
        mode = SearchMode(mode)
        where, params = filter_where(filters) if filters else ("", [])
        if mode is SearchMode.DENSE:
            ranked = self._dense(vector, k, where, params)
        else:
            fusion = fusion or FusionSettings()
            depth = k if mode is SearchMode.LEXICAL else candidates(fusion, k)
            ranked = self._lexical(query_text_for(mode, text), depth, where, params)
            if mode is SearchMode.HYBRID:
                dense = [cid for cid, _ in self._dense(vector, depth, where, params)]
                ranked = fuse_dense_lexical(dense, [cid for cid, _ in ranked], fusion, k)
        fields = self._fields([cid for cid, _ in ranked])
        return [search_hit(cid, score, fields[cid]) for cid, score in ranked]

    def _dense(
        self, vector: np.ndarray | None, k: int, where: str, params: list[Any]
    ) -> list[tuple[str, float]]:
        if vector is None:
            raise ValueError("dense and hybrid search need the query vector")
        matrix = self._load_matrix()
        if matrix is None:
            return []
        allowed = None
        if where:
            allowed = {r[0] for r in self._db.query(f"SELECT chunk_id FROM chunks {where}", params)}
        return matrix.top(vector, k, allowed)

    def _lexical(self, text: str, k: int, where: str, params: list[Any]) -> list[tuple[str, float]]:
        """The k best chunks by BM25, best first, equal scores by chunk id."""
        terms = query_terms(text)
        if terms:
            marks = in_clause(terms)
            frequency = dict(
                self._db.query(
                    f"SELECT term, doc FROM chunk_fts_terms WHERE term IN ({marks})", terms
                )
            )
            rows = self._db.query("SELECT COUNT(*) FROM chunks")[0][0]
            terms = informative_terms(terms, frequency, rows)
        expression = match_expression(terms)
        if expression is None:
            return []
        scores = dict(self._db.query(*lexical_query(expression, where, params, k)))
        if not scores:
            return []
        ids = self._db.query(
            f"SELECT rowid, chunk_id FROM chunks WHERE rowid IN ({in_clause(scores)})",
            list(scores),
        )
        ranked = [(chunk_id, float(scores[rowid])) for rowid, chunk_id in ids]
        return sorted(ranked, key=lambda pair: (-pair[1], pair[0]))

    def _fields(self, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not chunk_ids:
            return {}
        rows = self._db.query(
            f"SELECT chunk_id, fields FROM chunks WHERE chunk_id IN ({in_clause(chunk_ids)})",
            list(chunk_ids),
        )
        return {cid: json.loads(f) for cid, f in rows}

    def stats(self) -> StoreStats:
        ids = [r[0] for r in self._db.query("SELECT chunk_id FROM chunks")]
        documents = self._db.query(
            "SELECT COUNT(*) FROM documents WHERE status = ?", [DocStatus.INDEXED.value]
        )[0][0]
        identity = self.index_identity()
        return StoreStats(
            documents=documents,
            chunks=len(ids),
            chunk_ids_sha256=chunk_ids_digest(ids),
            model_id=identity[0] if identity else None,
            dimension=identity[1] if identity else None,
        )

    # --- ledger ------------------------------------------------------------------------------

    def get_document(self, doc_id: str) -> DocumentRecord | None:
        rows = self._db.query("SELECT record, signature FROM documents WHERE doc_id=?", [doc_id])
        return _record_from_row(*rows[0]) if rows else None

    def put_document(self, record: DocumentRecord) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM document_bands WHERE doc_id=?", [record.doc_id])
            conn.execute(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?)",
                [
                    record.doc_id,
                    record.status.value,
                    record.text_hash,
                    _record_to_json(record),
                    record.signature,
                ],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO document_bands VALUES (?, ?)",
                [(key, record.doc_id) for key in record.band_keys],
            )

    def delete_document(self, doc_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM document_bands WHERE doc_id=?", [doc_id])
            conn.execute("DELETE FROM documents WHERE doc_id=?", [doc_id])

    def iter_documents(self) -> Iterator[DocumentRecord]:
        for record_json, signature in self._db.query(
            "SELECT record, signature FROM documents ORDER BY doc_id"
        ):
            yield _record_from_row(record_json, signature)

    def find_documents(
        self, *, text_hash: str | None = None, band_keys: Sequence[str] = ()
    ) -> list[DocumentRecord]:
        rows: list[tuple] = []
        indexed = DocStatus.INDEXED.value
        if text_hash:
            rows += self._db.query(
                "SELECT record, signature FROM documents WHERE text_hash=? AND status=?",
                [text_hash, indexed],
            )
        if band_keys:
            rows += self._db.query(
                "SELECT record, signature FROM documents WHERE status=? AND doc_id IN"
                f" (SELECT doc_id FROM document_bands WHERE band_key IN ({in_clause(band_keys)}))",
                [indexed, *band_keys],
            )
        return [_record_from_row(*row) for row in dict.fromkeys(rows)]

    def close(self) -> None:
        self._db.close()
