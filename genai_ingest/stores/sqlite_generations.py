"""Generations of the embedded store: one SQLite file each, the live one named by a pointer
file that a swap replaces atomically (``os.replace``).

Generation 1 is ``genai-ingest.db`` (``Settings.database_path``), which also keeps the DLQ,
the claims and the embedding cache for every generation; generation n > 1 is
``genai-ingest.v{n}.db`` and holds chunks, vectors and the ledger only. ``genai-ingest.live``
names the live file (absent: generation 1). A process opens the live file when it opens the
store, so a search started after a swap reads the new generation; one running already finishes
on the file it opened. Dropping generation 1 empties its chunk and ledger tables (the file
stays, for the DLQ); a later generation's file is deleted."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from genai_ingest.failures.errors import ModelMismatch, Stage
from genai_ingest.models import Chunk
from genai_ingest.stores.generations import chunk_from_fields
from genai_ingest.stores.sqlite import SQLiteVectorStore
from genai_ingest.stores.sqlite_db import Database

_PAGE = 500
_GENERATION_TABLES = ("chunk_bands", "chunks", "document_bands", "documents", "index_meta")


class GenerationFiles:
    """The generation files beside ``first`` (the configured database path) and the pointer."""

    def __init__(self, first: Path) -> None:
        self.first = first
        self.pointer = first.with_suffix(".live")
        self._pattern = re.compile(rf"{re.escape(first.stem)}\.v(\d+){re.escape(first.suffix)}")

    def path_of(self, number: int) -> Path:
        return (
            self.first
            if number == 1
            else self.first.with_name(f"{self.first.stem}.v{number}{self.first.suffix}")
        )

    def number_of(self, path: Path) -> int:
        match = self._pattern.fullmatch(path.name)
        return int(match.group(1)) if match else 1

    def existing(self) -> dict[int, Path]:
        """Every generation file there is, by number."""
        found = {1: self.first} if self.first.exists() else {}
        for path in self.first.parent.glob(f"{self.first.stem}.v*{self.first.suffix}"):
            if self._pattern.fullmatch(path.name):
                found[self.number_of(path)] = path
        return found

    def live(self) -> Path:
        if self.pointer.exists():
            return self.first.with_name(self.pointer.read_text(encoding="utf-8").strip())
        return self.first

    def set_live(self, path: Path) -> None:
        """Point at ``path`` in one atomic rename (readers see the old or the new name)."""
        temporary = self.pointer.with_suffix(".live.tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(path.name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.pointer)

    def pending(self, model_id: str, dimension: int) -> Path | None:
        """The newest generation newer than the live one built for this model, if any."""
        floor = self.number_of(self.live())
        newer = [
            (number, path)
            for number, path in self.existing().items()
            if number > floor and identity(path) == (model_id, dimension)
        ]
        return max(newer)[1] if newer else None

    def previous(self) -> Path | None:
        """The newest generation older than the live one that still holds an index."""
        floor = self.number_of(self.live())
        older = [(n, p) for n, p in self.existing().items() if n < floor and identity(p)]
        return max(older)[1] if older else None

    def next_path(self) -> Path:
        return self.path_of(max(self.existing(), default=1) + 1)


def identity(path: Path) -> tuple[str, int] | None:
    """``(model_id, dimension)`` recorded in a generation file (read-only; None if none)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = dict(conn.execute("SELECT key, value FROM index_meta").fetchall())
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return None
    return (rows["model_id"], int(rows["dimension"])) if "model_id" in rows else None


class SQLiteGenerationStore(SQLiteVectorStore):
    """``SQLiteVectorStore`` on the live generation file, with the generation operations of
    ``stores.generations.GenerationalStore``."""

    def __init__(self, first: Path, busy_timeout_s: float = 30.0) -> None:
        self.generations = GenerationFiles(first)
        self._busy_timeout_s = busy_timeout_s
        super().__init__(self.generations.live(), busy_timeout_s)

    def _open(self, path: Path) -> None:
        if path != self.path:
            self._db.close()
            self._db = Database(path, self._busy_timeout_s)
            self._matrix = None

    @property
    def write_index(self) -> str:
        return self.path.name

    def live_index(self) -> str | None:
        return self.generations.live().name

    def ensure_index(self, model_id: str, dimension: int) -> None:
        """Write to the pending generation built for this model, else to the live one."""
        pending = self.generations.pending(model_id, dimension)
        if pending is not None:
            self._open(pending)
        super().ensure_index(model_id, dimension)

    def begin_reindex(self, model_id: str, dimension: int) -> str:
        path = self.generations.pending(model_id, dimension) or self.generations.next_path()
        self._open(path)
        super().ensure_index(model_id, dimension)
        return path.name

    def swap_alias(self) -> str:
        self._db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.generations.set_live(self.path)
        return self.path.name

    def rollback(self) -> str:
        previous = self.generations.previous()
        if previous is None:
            raise ModelMismatch("no previous generation to roll back to", stage=Stage.STORE)
        self.generations.set_live(previous)
        self._open(previous)
        return previous.name

    def drop_previous(self) -> list[str]:
        floor = self.generations.number_of(self.generations.live())
        dropped = []
        for number, path in sorted(self.generations.existing().items()):
            if number < floor and identity(path) is not None:
                _drop_file(path, keep=number == 1)
                dropped.append(path.name)
        return dropped

    def iter_stored_chunks(self) -> Iterator[Chunk]:
        after = ""
        while True:
            rows = self._db.query(
                "SELECT chunk_id, fields, signature FROM chunks WHERE chunk_id > ?"
                " ORDER BY chunk_id LIMIT ?",
                [after, _PAGE],
            )
            for _, fields, signature in rows:
                yield chunk_from_fields(json.loads(fields), signature)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]


def _drop_file(path: Path, *, keep: bool) -> None:
    """Delete a generation: its file (with its WAL), or, for the file that keeps the DLQ, the
    rows of its chunk and ledger tables."""
    if not keep:
        for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            part.unlink(missing_ok=True)
        return
    database = Database(path)
    try:
        with database.transaction() as conn:
            for table in _GENERATION_TABLES:
                conn.execute(f"DELETE FROM {table}")
        database.conn.execute("VACUUM")
    finally:
        database.close()
