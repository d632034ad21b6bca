"""Document claims and the DLQ in the embedded store's SQLite file (``sqlite.py``), each
operation one ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genai_ingest.failures.dlq import DeadLetter, EntryStatus, Failure, close_entry, merge_failure
from genai_ingest.stores.sqlite_db import Database
from genai_ingest.stores.sqlite_search import in_clause


class SQLiteClaims:
    """``DocumentClaims`` in the same SQLite file: each claim is one row, taken or taken over
    in one ``BEGIN IMMEDIATE`` transaction (one writer at a time across processes), so two
    processes can never both believe they hold a document."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        self._db = Database(path, busy_timeout_s)

    def claim(self, doc_id: str, owner: str, lease_s: float) -> bool:
        now = time.time()
        with self._db.transaction() as conn:
            taken = conn.execute(
                "INSERT INTO claims VALUES (?, ?, ?) ON CONFLICT(doc_id) DO UPDATE SET"
                " owner=excluded.owner, expires_at=excluded.expires_at"
                " WHERE claims.owner=excluded.owner OR claims.expires_at<?",
                [doc_id, owner, now + lease_s, now],
            ).rowcount
        return taken == 1

    def renew(self, doc_ids: Sequence[str], owner: str, lease_s: float) -> set[str]:
        ids = list(doc_ids)
        if not ids:
            return set()
        with self._db.transaction() as conn:
            conn.execute(
                f"UPDATE claims SET expires_at=? WHERE owner=? AND doc_id IN ({in_clause(ids)})",
                [time.time() + lease_s, owner, *ids],
            )
            held = conn.execute(
                f"SELECT doc_id FROM claims WHERE owner=? AND doc_id IN ({in_clause(ids)})",
                [owner, *ids],
            ).fetchall()
        return set(ids) - {r[0] for r in held}

    def release(self, doc_ids: Sequence[str], owner: str) -> None:
        ids = list(doc_ids)
        if ids:
            with self._db.transaction() as conn:
                conn.execute(
                    f"DELETE FROM claims WHERE owner=? AND doc_id IN ({in_clause(ids)})",
                    [owner, *ids],
                )

    def holder(self, doc_id: str) -> tuple[str, float] | None:
        rows = self._db.query("SELECT owner, expires_at FROM claims WHERE doc_id=?", [doc_id])
        return (rows[0][0], rows[0][1]) if rows else None

    def close(self) -> None:
        self._db.close()


class SQLiteDeadLetterQueue:
    """``DeadLetterQueue`` in the same SQLite file; raw bytes stored once per content hash."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        self._db = Database(path, busy_timeout_s)

    def put(self, failure: Failure, raw: bytes | None) -> DeadLetter:
        with self._db.transaction() as conn:
            entry = merge_failure(self.get(failure.doc_id), failure, raw)
            if raw is not None:
                conn.execute("INSERT OR IGNORE INTO dlq_raw VALUES (?, ?)", [entry.raw_sha256, raw])
            self._write(conn, entry)
        return entry

    @staticmethod
    def _write(conn: sqlite3.Connection, entry: DeadLetter) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO dlq VALUES (?, ?, ?, ?, ?, ?)",
            [
                entry.entry_id,
                entry.status.value,
                entry.stage,
                entry.error_class,
                entry.last_failed_at.isoformat(),
                json.dumps(entry.to_json()),
            ],
        )

    def get(self, entry_id: str) -> DeadLetter | None:
        rows = self._db.query("SELECT entry FROM dlq WHERE entry_id=?", [entry_id])
        return DeadLetter.from_json(json.loads(rows[0][0])) if rows else None

    def entries(
        self,
        *,
        status: EntryStatus | None = EntryStatus.OPEN,
        stage: str | None = None,
        error_class: str | None = None,
    ) -> list[DeadLetter]:
        clauses, params = ["1=1"], []
        for column, value in (("status", status), ("stage", stage), ("error_class", error_class)):
            if value is not None:
                clauses.append(f"{column}=?")
                params.append(str(value))
        rows = self._db.query(
            f"SELECT entry FROM dlq WHERE {' AND '.join(clauses)} ORDER BY last_failed_at",
            params,
        )
        return sorted(
            (DeadLetter.from_json(json.loads(r[0])) for r in rows),
            key=lambda e: (e.first_failed_at, e.entry_id),
        )

    def raw(self, entry_id: str) -> bytes | None:
        entry = self.get(entry_id)
        if entry is None or entry.raw_sha256 is None:
            return None
        rows = self._db.query("SELECT data FROM dlq_raw WHERE sha256=?", [entry.raw_sha256])
        return rows[0][0] if rows else None

    def _close(self, entry_id: str, status: EntryStatus, note: str) -> None:
        with self._db.transaction() as conn:
            entry = self.get(entry_id)
            if entry is None:
                raise KeyError(entry_id)
            self._write(conn, close_entry(entry, status, note))

    def resolve(self, entry_id: str, note: str) -> None:
        self._close(entry_id, EntryStatus.RESOLVED, note)

    def discard(self, entry_id: str, reason: str) -> None:
        self._close(entry_id, EntryStatus.DISCARDED, reason)

    def set_overrides(self, entry_id: str, overrides: dict[str, Any]) -> None:
        with self._db.transaction() as conn:
            entry = self.get(entry_id)
            if entry is None:
                raise KeyError(entry_id)
            entry.overrides = {**entry.overrides, **overrides}
            self._write(conn, entry)

    def close(self) -> None:
        self._db.close()
