"""The SQLite store's lexical index: an FTS5 table over the chunk text, ranked by BM25.

``chunk_fts`` is an external-content FTS5 table over the view ``chunk_texts`` (each chunk's
rowid and the ``text`` of its stored fields): the text is not stored twice. Triggers on
``chunks`` keep it in step inside the transaction that writes the chunk (an upsert is an
``INSERT ... ON CONFLICT DO UPDATE``, which keeps the rowid and fires the update trigger).
A database written before the index existed gets it built from its chunks on first open
(``ensure_lexical_index``), recorded as ``lexical_index`` in ``index_meta``.

The tokenizer (``unicode61``, case-folded, diacritics kept) splits text as Elasticsearch's
standard analyzer does for alphabetic scripts, so both stores match the same words; FTS5's
``bm25()`` uses the same k1 = 1.2 and b = 0.75 as Elasticsearch.

Speed: FTS5 computes ``bm25()`` for every matching row, so the words in at least half of the
chunks are left out of the query (``genai_ingest.stores.lexical``; document frequencies from the
``fts5vocab`` table ``chunk_fts_terms``), and without filters the ranking is read from the FTS
table alone, only the top rows mapped to chunk ids."""

from __future__ import annotations

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

#: Document frequencies of the indexed words, per connection (a temporary table).
VOCABULARY_SCHEMA = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunk_fts_terms USING fts5vocab(main, chunk_fts, row)"
)


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


def match_expression(terms: list[str]) -> str | None:
    """The FTS5 query matching any of ``terms`` (each quoted: no FTS5 syntax gets through),
    as Elasticsearch's ``match`` query does; None without terms."""
    if not terms:
        return None
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def lexical_query(
    expression: str, where: str, filter_params: list[Any], limit: int
) -> tuple[str, list[Any]]:
    """SQL and parameters of the ``limit`` best rows by BM25 for a ``MATCH`` expression, as
    ``(chunks rowid, score)``; with a filter clause on ``chunks`` (``filter_where``) joined
    to the chunks. FTS5's ``bm25()`` is lower for better matches: the score is its negation."""
    if not where:
        sql = (
            "SELECT rowid, -bm25(chunk_fts) AS score FROM chunk_fts WHERE chunk_fts MATCH ?"
            " ORDER BY score DESC LIMIT ?"
        )
        return sql, [expression, limit]
    sql = (
        "SELECT c.rowid, -bm25(chunk_fts) AS score FROM chunk_fts"
        " JOIN chunks c ON c.rowid = chunk_fts.rowid"
        f" WHERE chunk_fts MATCH ? AND {where.removeprefix('WHERE ')}"
        " ORDER BY score DESC LIMIT ?"
    )
    return sql, [expression, *filter_params, limit]
