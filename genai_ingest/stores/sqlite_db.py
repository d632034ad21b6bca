"""The embedded store's SQLite file: its schema (chunks, vectors, ledger, DLQ, claims) and a
connection that threads share, one writer at a time (WAL)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genai_ingest.failures.errors import classify_sqlite_error
from genai_ingest.stores.sqlite_lexical import VOCABULARY_SCHEMA, ensure_lexical_index

_SCHEMA = """
CREATE TABLE IF NOT EXISTS index_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, text_hash TEXT NOT NULL,
    fields TEXT NOT NULL, signature BLOB, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS chunks_text_hash ON chunks(text_hash);
CREATE TABLE IF NOT EXISTS chunk_bands (band_key TEXT NOT NULL, chunk_id TEXT NOT NULL,
    PRIMARY KEY (band_key, chunk_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunk_bands_chunk ON chunk_bands(chunk_id);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, status TEXT NOT NULL, text_hash TEXT, record TEXT NOT NULL,
    signature BLOB);
CREATE INDEX IF NOT EXISTS documents_text_hash ON documents(text_hash);
CREATE TABLE IF NOT EXISTS document_bands (band_key TEXT NOT NULL, doc_id TEXT NOT NULL,
    PRIMARY KEY (band_key, doc_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS document_bands_doc ON document_bands(doc_id);
CREATE TABLE IF NOT EXISTS dlq (
    entry_id TEXT PRIMARY KEY, status TEXT NOT NULL, stage TEXT NOT NULL,
    error_class TEXT NOT NULL, last_failed_at TEXT NOT NULL, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dlq_raw (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    doc_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
"""


def connect(path: Path, busy_timeout_s: float = 30.0) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, check_same_thread=False, timeout=busy_timeout_s, isolation_level=None
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    ensure_lexical_index(conn)
    conn.execute(VOCABULARY_SCHEMA)
    return conn


class Database:
    """A connection shared by threads, one writer at a time."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        self.path = path
        self.conn = connect(path, busy_timeout_s)
        self.lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a busy or unreachable database is a transient error."""
        with self.lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise classify_sqlite_error(exc) from exc
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise classify_sqlite_error(exc) from exc
                raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                raise classify_sqlite_error(exc) from exc

    def close(self) -> None:
        with self.lock:
            self.conn.close()
