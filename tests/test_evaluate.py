"""Retrieval evaluation: the metrics as plain functions, then ``genai-ingest eval`` and
``search --queries-file`` on a small real index (the samples) through the CLI, with citations."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from genai_ingest.search.evaluate import QAItem, Retrieved, evaluate, judge, load_qa, source_matches
from tests.conftest import SAMPLES
from tests.test_cli import as_json, cli

QUESTIONS = [
    ("When was the typewriter patented?", "docling_multi_page.pdf", "Patented in 1868"),
    ("What does the shape on the second slide say?", "docling_powerpoint_sample.pptx",
     "A rectangle shape with this text inside"),
    ("Where is Big Blue headquartered?", "docling_wiki.md", "headquartered in Armonk, New York"),
    ("Which berries can a duck eat?", "docling_word_sample.docx", "Blueberry, Strawberry"),
    ("Who greets Prince Vasili at her reception?", "unstructured_book-war-and-peace-1p.txt",
     "Anna Pavlovna Scherer"),
    ("What is the boiling point of mercury?", "docling_wiki.md", "356.7 °C"),  # not in there
]  # fmt: skip


def write_qa(path: Path) -> Path:
    rows = [{"question": q, "source": s, "answer": a} for q, s, a in QUESTIONS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --- plain functions ---------------------------------------------------------------------------


def test_load_qa_reads_jsonl_and_tsv(tmp_path: Path) -> None:
    jsonl = load_qa(write_qa(tmp_path / "qa.jsonl"))
    tsv = tmp_path / "qa.tsv"
    tsv.write_text(
        "question\tsource\tanswer\n" + "".join(f"{q}\t{s}\t{a}\n" for q, s, a in QUESTIONS)
    )
    assert load_qa(tsv) == jsonl
    assert jsonl[0] == QAItem(*QUESTIONS[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "source": "s"}\n')
    with pytest.raises(ValueError, match="row 1 lacks answer"):
        load_qa(bad)


def test_judge_needs_the_right_document_and_the_snippet() -> None:
    item = QAItem("q", "pdf/report.pdf", "Net  Revenue\nrose")
    hits = [
        Retrieved("file:///x/other.pdf", "net revenue rose"),  # right text, wrong document
        Retrieved("file:///x/pdf/report.pdf", "costs fell"),  # right document, wrong passage
        Retrieved("file:///x/pdf/report%2Epdf", "Overall, NET REVENUE ROSE by 3%."),
    ]
    outcome = judge(item, hits)
    assert (outcome.doc_rank, outcome.passage_rank) == (2, 3)
    assert source_matches("s3://bucket/a/pdf/report.pdf", "pdf/report.pdf")
    assert not source_matches("file:///x/mypdf/report.pdf", "pdf/report.pdf")


def test_metrics_over_questions() -> None:
    items = [QAItem(f"q{i}", "a.txt", "answer") for i in range(4)]
    ranked = {
        "q0": [Retrieved("a.txt", "the answer")],
        "q1": [Retrieved("a.txt", "no"), Retrieved("a.txt", "answer here")],
        "q2": [Retrieved("a.txt", "no")],
        "q3": [Retrieved("b.txt", "answer")],
    }
    report = evaluate(items, lambda questions, k: [ranked[q][:k] for q in questions], k=5)
    assert report.passage_at_k == 0.5
    assert report.doc_at_k == 0.75
    assert report.mrr == pytest.approx((1 + 0.5) / 4)
    assert [m.item.question for m in report.misses] == ["q2", "q3"]
    assert report.as_dict()["misses"][1]["doc_rank"] is None


# --- through the CLI, on a real index ------------------------------------------------------


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> dict:
    import os

    root = tmp_path_factory.mktemp("eval")
    shutil.copytree(SAMPLES, root / "docs")
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    data = ["--data-dir", str(root / "state")]
    report = as_json(cli(env, "run", str(root / "docs"), "--json", *data))
    assert report["documents_indexed"] >= 6
    return {"env": env, "data": data, "root": root}


@pytest.mark.slow
def test_eval_prints_metrics_lists_misses_and_gates(indexed: dict) -> None:
    env, data = indexed["env"], indexed["data"]
    qa = write_qa(indexed["root"] / "qa.jsonl")
    report = as_json(cli(env, "eval", str(qa), "--k", "5", "--json", *data))
    assert report["questions"] == 6
    assert report["passage_at_k"] == pytest.approx(5 / 6, abs=1e-3)
    assert report["doc_at_k"] >= 0.83  # the unanswerable question may miss its document too
    assert 0.5 < report["mrr"] <= 5 / 6
    assert [m["question"] for m in report["misses"]] == ["What is the boiling point of mercury?"]
    text = cli(env, "eval", str(qa), *data)
    assert text.returncode == 0 and "passage@5" in text.stdout and "mercury" in text.stdout
    gated = cli(env, "eval", str(qa), "--min-passage-at-k", "0.9", *data)
    assert gated.returncode == 4
    assert "below --min-passage-at-k 0.9" in gated.stderr
    assert cli(env, "eval", str(qa), "--min-passage-at-k", "0.8", *data).returncode == 0


@pytest.mark.slow
def test_batch_search_returns_cited_hits(indexed: dict) -> None:
    env, data = indexed["env"], indexed["data"]
    queries = indexed["root"] / "queries.txt"
    queries.write_text(
        "Who patented the typewriter in 1868?\n\n"
        "A rectangle shape with this text inside\n"
        "Where is IBM headquartered?\n"
    )
    results = as_json(
        cli(env, "search", "--queries-file", str(queries), "--k", "3", "--json", *data)
    )
    assert [r["query"] for r in results] == [
        "Who patented the typewriter in 1868?",
        "A rectangle shape with this text inside",
        "Where is IBM headquartered?",
    ]
    pdf, slide, wiki = (r["hits"][0] for r in results)
    assert pdf["source"].endswith("docling_multi_page.pdf") and "Sholes" in pdf["text"]
    assert pdf["page_start"] == 1 and pdf["page_end"] in (1, 2)
    assert slide["source"].endswith(".pptx") and slide["page_start"] == 2
    assert wiki["source"].endswith("docling_wiki.md") and wiki["page_start"] is None
    assert wiki["headings"] and wiki["headings"][0] == "IBM"
    for hit in (h for r in results for h in r["hits"] if h["source"].endswith(".pdf")):
        assert not re.search(r"[a-z,]\n+[a-z]", hit["text"])  # no break inside a sentence
    bad = cli(env, "search", "x", "--queries-file", str(queries), *data)
    assert bad.returncode == 2 and "not both" in bad.stderr + bad.stdout


def test_sqlite_store_returns_and_filters_citations(tmp_path: Path) -> None:
    import numpy as np

    from genai_ingest.stores.sqlite import SQLiteVectorStore
    from tests.test_store_contract import make_chunk

    store = SQLiteVectorStore(tmp_path / "store.db")
    store.ensure_index("m", 2)
    cited = [
        make_chunk("report", 0, np.array([1.0, 0.0], np.float32)),
        make_chunk("report", 1, np.array([0.8, 0.6], np.float32)),
        make_chunk("notes", 0, np.array([0.6, 0.8], np.float32)),
    ]
    citations = [
        {"page_start": 1, "page_end": 2, "headings": ["Results", "Revenue"]},
        {"page_start": 3, "page_end": 3, "headings": ["Outlook"]},
        {"page_start": None, "page_end": None, "headings": []},
    ]
    for item, citation in zip(cited, citations, strict=True):
        item.chunk.metadata.update(citation)
    store.upsert_chunks(cited)
    query = np.array([1.0, 0.0], np.float32)
    hits = store.search(query, k=3)
    assert [{k: h.metadata[k] for k in citations[0]} for h in hits] == citations
    assert [h.metadata["page_start"] for h in store.search(query, filters={"page_start": 3})] == [3]
    revenue = store.search(query, filters={"headings": ["Revenue", "Nowhere"]})
    assert [h.metadata["headings"] for h in revenue] == [["Results", "Revenue"]]
    store.close()
