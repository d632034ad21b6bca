"""Behaviour that only a live Elasticsearch node can show: a model change built as a new
generation while searches keep answering from the old one, then an atomic alias swap; hybrid
search fused client-side (BM25 and kNN, reciprocal rank fusion); citation
fields written, returned and filterable; mapping and dimension mismatches refused before any
write; the DLQ kept in Elasticsearch and the marimo triage app working against it."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from genai_ingest.config import SearchMode
from genai_ingest.failures.errors import ModelMismatch
from tests.conftest import REPO, SAMPLES
from tests.es_live import es_client, es_settings, open_es_store, require_es
from tests.test_store_contract import basis, make_chunk, unit

pytestmark = pytest.mark.elasticsearch

MODEL, DIM = "model-a", 8


def test_search_during_a_rebuild_answers_from_the_old_index_until_the_swap(
    alias: str, tmp_path: Path
) -> None:
    old = open_es_store(alias, tmp_path)
    old.ensure_index(MODEL, DIM)
    old.upsert_chunks([make_chunk(f"old-{i}", 0, basis(i % DIM)) for i in range(20)])
    reader = open_es_store(alias, tmp_path)  # a searcher: reads through the alias only
    rebuild = open_es_store(alias, tmp_path)
    new_index = rebuild.begin_reindex("model-b", 16)

    seen: set[str] = set()
    searches_during_rebuild = 0
    errors: list[BaseException] = []
    answering, rebuilding, stop = threading.Event(), threading.Event(), threading.Event()

    def search_while_rebuilding() -> None:
        nonlocal searches_during_rebuild
        while not stop.is_set():
            try:
                hits = reader.search(unit(1.0, 0.5), k=5)
            except BaseException as exc:
                errors.append(exc)
                return
            seen.update(h.doc_id for h in hits)
            if hits:  # the old generation is visible (near real time: after a refresh)
                answering.set()
                searches_during_rebuild += rebuilding.is_set()

    searcher = threading.Thread(target=search_while_rebuilding)
    searcher.start()
    try:
        assert answering.wait(timeout=60), "the old index never answered"
        rebuilding.set()
        for batch in range(5):
            rebuild.upsert_chunks(
                [make_chunk(f"new-{batch}-{i}", 0, basis(i, dim=16)) for i in range(10)]
            )
        deadline = time.monotonic() + 30  # the new generation is written, not yet live
        while searches_during_rebuild == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        searcher.join(timeout=60)
    assert errors == [] and searches_during_rebuild > 0
    assert seen and all(d.startswith("old-") for d in seen)
    assert reader.live_index() == old.write_index != new_index

    assert rebuild.swap_alias(delete_previous=True) == new_index
    after = open_es_store(alias, tmp_path)
    assert after.live_index() == new_index
    assert after.index_identity() == ("model-b", 16)
    hits = after.search(basis(3, dim=16), k=3)
    assert hits and all(h.doc_id.startswith("new-") for h in hits)
    with pytest.raises(ModelMismatch):
        after.ensure_index(MODEL, DIM)


def test_hybrid_search_fuses_client_side_and_ranks_the_keyword_match(
    alias: str, tmp_path: Path
) -> None:
    store = open_es_store(alias, tmp_path)
    store.ensure_index(MODEL, DIM)
    store.upsert_chunks(
        [
            make_chunk("doc-a", 0, basis(0), text="ledger rows are written last"),
            make_chunk("doc-z", 0, basis(1), text="zebra crossing rules for pedestrians"),
            make_chunk("doc-y", 0, unit(1.0, 0.9), text="the alias moves atomically"),
        ]
    )
    hits = store.search(unit(1.0, 0.2), k=3, text="zebra pedestrians", mode=SearchMode.HYBRID)
    assert [h.doc_id for h in hits] == ["doc-z", "doc-a", "doc-y"]  # lifted by the keyword
    assert hits[0].score == pytest.approx(1 / 13 + 1 / 11)  # dense rank 3, BM25 rank 1 (rrf_k 10)
    plain = store.search(unit(1.0, 0.2), k=1)
    assert plain[0].doc_id == "doc-a"


def test_citation_fields_are_stored_returned_and_filterable(alias: str, tmp_path: Path) -> None:
    store = open_es_store(alias, tmp_path)
    store.ensure_index(MODEL, DIM)
    cited = make_chunk("doc-p", 0, basis(0))
    cited.chunk.metadata.update(page_start=4, page_end=5, headings=["Part II", "Scope"])
    plain = make_chunk("doc-q", 0, basis(1))
    store.upsert_chunks([cited, plain])
    hits = {h.doc_id: h for h in store.search(unit(1.0, 1.0), k=2)}
    assert hits["doc-p"].metadata["page_start"] == 4
    assert hits["doc-p"].metadata["page_end"] == 5
    assert hits["doc-p"].metadata["headings"] == ["Part II", "Scope"]
    assert hits["doc-q"].metadata["page_start"] is None
    assert hits["doc-q"].metadata["headings"] == []
    by_heading = store.search(unit(1.0, 1.0), k=2, filters={"headings": "Scope"})
    assert [h.doc_id for h in by_heading] == ["doc-p"]


def count(alias: str) -> int:
    client = es_client(require_es())
    try:
        client.indices.refresh(index=f"{alias}-*")
        return int(client.count(index=f"{alias}-*")["count"])
    finally:
        client.close()


def test_mapping_and_dimension_mismatches_are_refused_before_any_write(
    alias: str, tmp_path: Path
) -> None:
    client = es_client(require_es())
    foreign = f"{alias}-v1-foreign-8"  # an index we did not create, under our alias
    client.indices.create(
        index=foreign, mappings={"properties": {"vector": {"type": "dense_vector", "dims": 8}}}
    )
    client.indices.put_alias(index=foreign, name=alias)
    store = open_es_store(alias, tmp_path)
    with pytest.raises(ModelMismatch):
        store.ensure_index(MODEL, DIM)
    with pytest.raises(ModelMismatch):
        store.upsert_chunks([make_chunk("doc-x", 0, basis(0))])
    client.indices.delete(index=foreign)
    client.close()

    store.ensure_index(MODEL, DIM)
    with pytest.raises(ModelMismatch):
        store.upsert_chunks(
            [make_chunk("doc-x", 0, basis(0)), make_chunk("doc-y", 0, basis(0, 16))]
        )
    with pytest.raises(ModelMismatch):
        open_es_store(alias, tmp_path).ensure_index(MODEL, DIM * 2)
    with pytest.raises(ModelMismatch):
        open_es_store(alias, tmp_path).ensure_index("model-b", DIM)
    assert count(alias) == 0, "a refused write left documents behind"


def run_notebook(name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    path = REPO / "notebooks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"notebook_es_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [f"{name}.py"])
    _, definitions = module.app.run()
    return dict(definitions)


@pytest.mark.slow
def test_the_dlq_lives_in_elasticsearch_and_the_triage_app_reads_it(
    alias: str, tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.ingest import ingest
    from genai_ingest.stores import open_dlq
    from genai_ingest.stores.es_dlq import ElasticsearchDeadLetterQueue

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("unstructured_password.pdf", "docling_wiki.md"):
        shutil.copyfile(SAMPLES / name, docs / name)
    url = require_es()
    settings = es_settings(url, alias, tmp_path / "state", dlq_in_elasticsearch=True)
    report = ingest(sources=[str(docs)], settings=settings)
    assert (report["documents_indexed"], report["dlq_new"]) == (1, 1)
    dlq = open_dlq(settings)
    assert isinstance(dlq, ElasticsearchDeadLetterQueue)
    [entry] = dlq.entries()
    assert entry.error_class == "password_required" and entry.source.endswith("password.pdf")
    assert dlq.raw(entry.entry_id) == (docs / "unstructured_password.pdf").read_bytes()

    monkeypatch.setenv("GENAI_INGEST_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GENAI_INGEST_STORE_URL", url)
    monkeypatch.setenv("GENAI_INGEST_ELASTICSEARCH__INDEX", alias)
    monkeypatch.setenv("GENAI_INGEST_ELASTICSEARCH__DLQ_IN_ELASTICSEARCH", "true")
    defs = run_notebook("dlq_triage", monkeypatch)
    assert isinstance(defs["dlq"], ElasticsearchDeadLetterQueue)
    assert defs["stats"]["open"] == 1 and defs["stats"]["by_stage"] == {"parse": 1}
    assert list(defs["table"].data["name"]) == ["unstructured_password.pdf"]
