"""Hybrid search pieces the store contract does not cover: the fusion function itself, the
embedded store's lexical index on a database built before it existed, and ``search`` / ``eval``
saying which mode ranked their hits (a lexical search needs no model: these run in seconds)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from genai_ingest.config import SearchMode, Settings
from genai_ingest.stores.fusion import fuse
from genai_ingest.stores.lexical import informative_terms, query_terms
from genai_ingest.stores.sqlite import SQLiteVectorStore
from tests.test_cli import as_json, cli
from tests.test_store_contract import (
    DIM,
    MODEL,
    QUERY_VECTOR,
    TEXTS,
    basis,
    make_chunk,
    ranked_corpus,
)

# --- the fusion function ------------------------------------------------------------------------


def test_rrf_adds_weighted_reciprocal_ranks() -> None:
    fused = fuse([["a", "b", "c"], ["c", "d"]], (1.0, 1.0), rrf_k=60)
    assert [item for item, _ in fused] == ["c", "a", "b", "d"]
    assert dict(fused) == pytest.approx(
        {"c": 1 / 63 + 1 / 61, "a": 1 / 61, "b": 1 / 62, "d": 1 / 62}
    )
    weighted = fuse([["a", "b"], ["b", "a"]], (1.0, 3.0), rrf_k=1)
    assert [item for item, _ in weighted] == ["b", "a"]  # 1/3 + 3/2 against 1/2 + 3/3


def test_rrf_ties_go_to_the_earlier_ranking_then_the_id() -> None:
    # b (first ranking, rank 2) and d (second, rank 2) score the same: b wins, as dense does
    assert [item for item, _ in fuse([["a", "b"], ["c", "d"]], (1.0, 1.0), 60)] == [
        "a",
        "c",
        "b",
        "d",
    ]
    assert [item for item, _ in fuse([[], ["z", "y"]], (1.0, 1.0), 60)] == ["z", "y"]
    assert fuse([[], []], (1.0, 1.0), 60) == []


def test_query_words_leave_out_those_in_half_the_chunks() -> None:
    terms = query_terms('Who is "the" Patent\'s assignee? The Café, 1868')
    assert terms == ["who", "is", "the", "patent", "s", "assignee", "café", "1868"]
    frequency = {"the": 5, "is": 4, "who": 6, "patent": 2, "assignee": 1}
    assert informative_terms(terms, frequency, chunks=8) == [
        "patent",
        "s",
        "assignee",
        "café",
        "1868",
    ]


def test_a_query_of_common_words_only_finds_nothing_lexically(tmp_path: Path) -> None:
    store = SQLiteVectorStore(tmp_path / "store.db")
    store.ensure_index(MODEL, DIM)
    store.upsert_chunks(ranked_corpus())  # "the" is in 4 of the 7 chunks
    assert store.search(None, text="the", mode=SearchMode.LEXICAL) == []
    with_the = store.search(None, text="the patent", mode=SearchMode.LEXICAL)
    assert with_the == store.search(None, text="patent", mode=SearchMode.LEXICAL) != []
    hybrid = store.search(QUERY_VECTOR, k=2, text="the", mode=SearchMode.HYBRID)
    assert [h.doc_id for h in hybrid] == ["doc-0", "doc-1"]  # the dense ranking alone
    store.close()


# --- the SQLite lexical index ------------------------------------------------------------------


def strip_lexical_index(path: Path) -> None:
    """Make ``path`` what a store written before the lexical index looks like: no FTS table,
    view, triggers or ``lexical_index`` marker (the chunks table itself is unchanged)."""
    conn = sqlite3.connect(path)
    for trigger in ("chunks_fts_insert", "chunks_fts_delete", "chunks_fts_update"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE chunk_fts")
    conn.execute("DROP VIEW chunk_texts")
    conn.execute("DELETE FROM index_meta WHERE key = 'lexical_index'")
    conn.commit()
    conn.close()


def fts_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO chunk_fts(chunk_fts, rank) VALUES ('integrity-check', 1)")
    count = conn.execute("SELECT COUNT(*) FROM chunk_fts WHERE chunk_fts MATCH 'the'").fetchone()
    conn.close()
    return count[0]


def test_a_store_built_before_the_lexical_index_gets_it_on_first_open(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    old = SQLiteVectorStore(path)
    old.ensure_index(MODEL, DIM)
    chunks = ranked_corpus()
    old.upsert_chunks(chunks)
    old.close()
    strip_lexical_index(path)
    assert "chunk_fts" not in {
        r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")
    }

    store = SQLiteVectorStore(path)  # first open: the index is built from the stored chunks
    hits = store.search(None, k=3, text="patent assignee", mode=SearchMode.LEXICAL)
    assert [h.doc_id for h in hits] == ["doc-3", "doc-5"]
    assert fts_rows(path) == sum("the" in t.split() for t in TEXTS)  # and consistent
    store.delete_chunks([chunks[3].chunk.chunk_id])  # later writes keep it in step
    store.upsert_chunks([chunks[3]])
    assert [h.doc_id for h in store.search(basis(3), k=1, text="assignee", mode="hybrid")] == [
        "doc-3"
    ]
    assert fts_rows(path) == sum("the" in t.split() for t in TEXTS)
    store.close()


# --- search and eval say which mode ranked the hits --------------------------------------------


def test_search_and_eval_report_the_mode_that_ranked_the_hits(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = SQLiteVectorStore(settings.database_path)
    store.ensure_index("another-model", 384)  # a lexical search never loads nor checks it
    store.upsert_chunks(
        [make_chunk(f"doc-{i}", 0, basis(i, dim=384), text=t) for i, t in enumerate(TEXTS)]
    )
    store.close()
    env = {**os.environ, "GENAI_INGEST_DATA_DIR": str(tmp_path)}
    hits = as_json(cli(env, "search", "patent assignee", "--mode", "lexical", "--json"))
    assert [(h["doc_id"], h["mode"]) for h in hits] == [("doc-3", "lexical"), ("doc-5", "lexical")]
    queries = tmp_path / "queries.txt"
    queries.write_text("Remington\ninventors\n")
    env_mode = {**env, "GENAI_INGEST_SEARCH__MODE": "lexical"}  # the setting, no flag
    batch = as_json(cli(env_mode, "search", "--queries-file", str(queries), "--json"))
    assert [(r["mode"], r["hits"][0]["doc_id"]) for r in batch] == [
        ("lexical", "doc-3"),
        ("lexical", "doc-5"),
    ]
    qa = tmp_path / "qa.jsonl"
    row = {"question": "who is the patent assignee", "source": "doc-3.txt", "answer": "Remington"}
    qa.write_text(json.dumps(row) + "\n")
    report = as_json(cli(env_mode, "eval", str(qa), "--json"))
    assert (report["mode"], report["passage_at_k"], report["mrr"]) == ("lexical", 1.0, 1.0)
    text = cli(env, "eval", str(qa), "--mode", "lexical")
    assert text.returncode == 0 and re.search(r"search mode\W+lexical", text.stdout)
    bad = cli(env, "search", "x", "--mode", "sparse")
    assert bad.returncode == 2
