"""The SQLite store's lexical index: an FTS5 table over the chunk text, ranked by BM25.

``chunk_fts`` is an external-content FTS5 table over the view ``chunk_texts`` (each chunk's
rowid and the ``text`` of its stored fields): the text is not stored twice. Triggers on
``chunks`` keep it in step inside the transaction that writes the chunk (an upsert is an
``INSERT ... ON CONFLICT DO UPDATE``, which keeps the rowid and fires the update trigger).
A database written before the index existed gets it built from its chunks on first open
(``ensure_lexical_index``), recorded as ``lexical_index`` in ``index_meta``.

The tokenizer (``unicode61``, case-folded, diacritics kept) splits text as Elasticsearch's
standard analyzer does for alphabetic scripts, so both stores match the same words; FTS5's
``bm25()`` uses the same k1 = 1.2 and b = 0.75 as Elasticsearch."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

LEXICAL_INDEX_KEY = "lexical_index"
LEXICAL_INDEX_VERSION = "1"

_LEXICAL_SCHEMA = (
    "CREATE VIEW IF NOT EXISTS chunk_texts AS"
    " SELECT rowid AS id, json_extract(fields, '$.text') AS text FROM chunks",
    "CREATE VIRTUAL TABLE IF NOT EXISTS chunk_fts USING fts5(text, content='chunk_texts',"
    " content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN"
    " INSERT INTO chunk_fts(rowid, text) VALUES (new.rowid, json_extract(new.fields, '$.text'));"
    " END",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN"
    " INSERT INTO chunk_fts(chunk_fts, rowid, text)"
    " VALUES ('delete', old.rowid, json_extract(old.fields, '$.text')); END",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_update AFTER UPDATE OF fields ON chunks BEGIN"
    " INSERT INTO chunk_fts(chunk_fts, rowid, text)"
    " VALUES ('delete', old.rowid, json_extract(old.fields, '$.text'));"
    " INSERT INTO chunk_fts(rowid, text) VALUES (new.rowid, json_extract(new.fields, '$.text'));"
    " END",
)

_TERM = re.compile(r"\w+")


def ensure_lexical_index(conn: sqlite3.Connection) -> None:
    """Create the FTS5 index and its triggers, and index every stored chunk, once per database
    (one ``BEGIN IMMEDIATE`` transaction: a concurrent opener waits, then finds it built)."""
    if _built(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _built(conn):
            for statement in _LEXICAL_SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO chunk_fts(chunk_fts) VALUES ('rebuild')")
            conn.execute(
                "INSERT OR REPLACE INTO index_meta VALUES (?, ?)",
                [LEXICAL_INDEX_KEY, LEXICAL_INDEX_VERSION],
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _built(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT value FROM index_meta WHERE key = ?", [LEXICAL_INDEX_KEY]).fetchone()
    return row is not None and row[0] == LEXICAL_INDEX_VERSION


def match_expression(text: str) -> str | None:
    """The FTS5 query for a free-text query: each distinct word as a quoted term, any of them
    matching (as Elasticsearch's ``match`` query); None when the text has no word."""
    terms = dict.fromkeys(_TERM.findall(text.casefold()))
    if not terms:
        return None
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def lexical_query(
    expression: str, where: str, filter_params: list[Any], limit: int
) -> tuple[str, list[Any]]:
    """SQL and parameters of the ``limit`` best chunk ids by BM25 (best first, ties by id) for
    a ``MATCH`` expression, within an optional filter clause on ``chunks`` (``filter_where``).
    FTS5's ``bm25()`` is lower for better matches; the score returned is its negation."""
    extra = where.replace("WHERE ", "AND ", 1) if where else ""
    sql = (
        "SELECT c.chunk_id, -bm25(chunk_fts) AS score FROM chunk_fts"
        " JOIN chunks c ON c.rowid = chunk_fts.rowid"
        f" WHERE chunk_fts MATCH ? {extra} ORDER BY score DESC, c.chunk_id LIMIT ?"
    )
    return sql, [expression, *filter_params, limit]
