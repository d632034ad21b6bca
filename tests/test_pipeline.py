"""The ``ingest`` and ``dlq_replay`` flows end to end: real Prefect server, real docling,
real model, embedded store. Idempotency, incremental updates, deletes, replay, convergence
after a crash, and the retry delays Prefect actually applies."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from prefect import task
from pydantic import SecretStr

from flows.dlq_replay import dlq_replay
from flows.ingest import ingest
from genai_ingest.config import Settings
from genai_ingest.failures.dlq import EntryStatus
from genai_ingest.failures.errors import EndpointUnavailable, UnsupportedFormat
from genai_ingest.failures.policies import TaskRetryPolicy
from genai_ingest.models import DocStatus, document_id
from genai_ingest.run.batch import embed_batch
from genai_ingest.run.prepare import Prepared, prepare
from genai_ingest.run.runtime import runtime_for
from genai_ingest.run.summary import RunSummary
from genai_ingest.sources.discovery import discover
from tests.conftest import SAMPLES

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

WIKI = "docling_wiki.md"
LOCKED = "unstructured_password.pdf"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A private copy of the sample documents (tests edit it)."""
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def cached_vectors(settings: Settings) -> int:
    """Vectors in the embedding cache (chunk texts and sentence windows)."""
    with sqlite3.connect(settings.database_path) as conn:
        return conn.execute("SELECT count(*) FROM embedding_cache").fetchone()[0]


def run(docs: Path, settings: Settings, **options: object) -> dict:
    return ingest(sources=[str(docs)], settings=settings, **options)


def test_first_run_indexes_everything_and_dead_letters_the_locked_pdf(
    docs: Path, settings: Settings
) -> None:
    report = run(docs, settings)
    files = sorted(p.name for p in docs.iterdir())
    assert report["documents_seen"] == len(files)
    assert report["documents_indexed"] + report["documents_duplicate"] == len(files) - 1
    assert report["documents_failed"] == report["dlq_new"] == 1
    # one vector per chunk text and per sentence window of a long chunk, each computed once
    assert report["embeddings_computed"] == cached_vectors(settings) > report["chunks_written"] > 20

    rt = runtime_for(settings)
    [entry] = rt.dlq.entries()
    assert entry.source.endswith(LOCKED)
    assert (entry.stage, entry.error_class, entry.error_kind) == (
        "parse",
        "password_required",
        "permanent",
    )
    assert "password required" in entry.reason
    assert "PasswordRequired" in entry.traceback
    assert rt.dlq.raw(entry.entry_id) == (docs / LOCKED).read_bytes()

    record = rt.store.get_document(document_id((docs / WIKI).resolve().as_uri()))
    assert record is not None and record.status is DocStatus.INDEXED
    assert record.parser == "docling" and record.language == "en"
    assert set(record.chunk_ids) == rt.store.chunk_ids_of(record.doc_id)


def test_second_identical_run_embeds_and_writes_nothing(docs: Path, settings: Settings) -> None:
    run(docs, settings)
    digest = runtime_for(settings).store.stats().chunk_ids_sha256
    again = run(docs, settings)
    assert again["embeddings_computed"] == again["chunks_written"] == 0
    assert again["documents_unchanged"] == again["documents_seen"]
    assert again["dlq_new"] == 0
    assert runtime_for(settings).store.stats().chunk_ids_sha256 == digest


def test_editing_one_document_reembeds_only_its_changed_chunks(
    docs: Path, settings: Settings
) -> None:
    run(docs, settings)
    rt = runtime_for(settings)
    doc_id = document_id((docs / WIKI).resolve().as_uri())
    before = set(rt.store.get_document(doc_id).chunk_ids)
    vectors_before = cached_vectors(settings)

    text = (docs / WIKI).read_text()
    marker = "International Business Machines"
    assert marker in text
    (docs / WIKI).write_text(text.replace(marker, "Intl. Business Machines Corp.", 1))
    report = run(docs, settings)

    after = set(rt.store.get_document(doc_id).chunk_ids)
    changed = after - before
    assert report["documents_indexed"] == 1
    assert report["documents_unchanged"] == report["documents_seen"] - 1
    assert 1 <= len(changed) < len(after) / 2
    # only the edited chunks' texts and windows are embedded again
    assert (
        len(changed) <= report["embeddings_computed"] == cached_vectors(settings) - vectors_before
    )
    assert report["chunks_deleted"] == len(before - after) >= 1
    assert rt.store.chunk_ids_of(doc_id) == after


def test_search_finds_the_document_a_query_comes_from(docs: Path, settings: Settings) -> None:
    from genai_ingest.search.query import search_index

    run(docs, settings)
    hits = search_index(settings, "Prince Vasili and Anna Pavlovna talk about Napoleon", k=3)
    assert hits[0].source.endswith("unstructured_book-war-and-peace-1p.txt")
    assert hits[0].score > hits[-1].score or len(hits) == 1
    filtered = search_index(settings, "word processor history", k=5, filters={"format": "pdf"})
    assert filtered and all(h.metadata["format"] == "pdf" for h in filtered)


def test_delete_missing_removes_a_deleted_file_and_its_chunks(
    docs: Path, settings: Settings
) -> None:
    run(docs, settings)
    rt = runtime_for(settings)
    doc_id = document_id((docs / WIKI).resolve().as_uri())
    assert rt.store.chunk_ids_of(doc_id)
    (docs / WIKI).unlink()

    kept = run(docs, settings)
    assert kept["documents_deleted"] == 0 and rt.store.get_document(doc_id) is not None

    report = run(docs, settings, delete_missing=True)
    assert report["documents_deleted"] == 1
    assert rt.store.get_document(doc_id) is None
    assert rt.store.chunk_ids_of(doc_id) == set()


def test_replay_with_the_password_resolves_and_a_second_replay_is_a_no_op(
    docs: Path, settings: Settings
) -> None:
    run(docs, settings)
    rt = runtime_for(settings)
    [entry] = rt.dlq.entries()
    chunks_before = rt.store.stats().chunks

    wrong = dlq_replay(entry_ids=[entry.entry_id], settings=settings, password=SecretStr("nope"))
    assert wrong["resolved"] == [] and rt.dlq.get(entry.entry_id).attempts == 2
    assert rt.dlq.get(entry.entry_id).reason == "wrong password"

    report = dlq_replay(
        error_class="password_required", settings=settings, password=SecretStr("password")
    )
    assert report["resolved"] == [entry.entry_id]
    resolved = rt.dlq.get(entry.entry_id)
    assert resolved.status is EntryStatus.RESOLVED
    assert [h.get("status") for h in resolved.history] == [None, None, "resolved"]
    assert rt.store.get_document(entry.doc_id).status is DocStatus.INDEXED
    digest = rt.store.stats().chunk_ids_sha256
    assert rt.store.stats().chunks > chunks_before

    again = dlq_replay(error_class="password_required", settings=settings)
    assert again["replayed"] == 0 and again["resolved"] == []
    assert rt.store.stats().chunk_ids_sha256 == digest


def test_a_crash_between_chunk_writes_and_the_ledger_converges_on_rerun(
    docs: Path, tmp_path: Path
) -> None:
    """Chunks of a changed document were written, stale ones not deleted, ledger not updated
    (the process died there). The next run must reach the clean run's index exactly."""
    crashed = Settings(data_dir=tmp_path / "crashed")
    run(docs, crashed)
    (docs / WIKI).write_text((docs / WIKI).read_text().replace("IBM", "I.B.M.", 3))

    rt = runtime_for(crashed)
    summary = RunSummary()
    [ref] = [r for r in discover([str(docs)], crashed.sources) if r.name == WIKI]
    prepared = prepare(ref, rt, summary)
    assert isinstance(prepared, Prepared)
    embedded = embed_batch([prepared], rt, summary)
    rt.store.upsert_chunks(embedded.chunks[0])  # ... and the process dies here

    report = run(docs, crashed)
    assert report["documents_indexed"] == 1 and report["embeddings_computed"] == 0
    clean = Settings(data_dir=tmp_path / "clean")
    run(docs, clean)
    assert rt.store.stats() == runtime_for(clean).store.stats()


def test_prefect_retries_transient_errors_with_growing_jittered_delays() -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.runtime import task_run

    policy = TaskRetryPolicy(retries=3, backoff_factor_s=0.4, jitter_factor=0.5)
    attempts: list[float] = []
    run_ids: list[str] = []

    @task(**policy.task_options())
    def flaky() -> str:
        attempts.append(time.monotonic())
        run_ids.append(task_run.get_id())
        if len(attempts) <= 3:
            raise EndpointUnavailable("HTTP 503 from the embedder")
        return "ok"

    @task(**policy.task_options())
    def broken() -> None:
        attempts.append(time.monotonic())
        raise UnsupportedFormat("not a document")

    @flow
    def exercise() -> str:
        return flaky()

    assert exercise() == "ok"
    with get_client(sync_client=True) as client:
        states = client.read_task_run_states(run_ids[0])
    planned = [
        (s.state_details.scheduled_time - s.timestamp).total_seconds()
        for s in states
        if s.name == "AwaitingRetry"
    ]
    waited = [b - a for a, b in itertools.pairwise(attempts)]
    nominal = [0.4, 0.8, 1.6]
    assert len(planned) == len(waited) == len(nominal)
    for plan, wait, base in zip(planned, waited, nominal, strict=True):
        assert 0.0 < plan <= base * (1 + policy.jitter_factor) + 1e-3  # clamped jitter
        assert abs(plan - base) > 1e-3  # jittered: not the nominal backoff
        assert wait >= plan - 0.05  # and Prefect really waited that long
    assert planned[2] > planned[0]  # grows

    attempts.clear()

    @flow
    def exercise_permanent() -> None:
        broken()

    with pytest.raises(UnsupportedFormat):
        exercise_permanent()
    assert len(attempts) == 1  # a permanent error is never retried


def test_a_task_takes_the_run_summary_while_other_threads_update_it() -> None:
    """Prefect resolves each task's parameters while prepare threads add stage timings; the
    summary must reach the task as the same object, not be walked (CI failed on that race)."""
    import threading

    from prefect import flow

    summary = RunSummary()
    stop = threading.Event()

    def add_stages() -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            with summary.timed(f"stage-{i}"):
                pass

    @task(persist_result=False)
    def takes(given: RunSummary) -> bool:
        return given is summary

    @flow
    def many_tasks() -> list[bool]:
        return [takes(summary) for _ in range(20)]

    updater = threading.Thread(target=add_stages)
    updater.start()
    try:
        assert all(many_tasks())
    finally:
        stop.set()
        updater.join()
