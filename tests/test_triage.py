"""The triage functions behind the notebooks, against a DLQ seeded by a real ingest of bad
documents: a user-password PDF, a truncated DOCX, an encrypted XLSX (and one good document)."""

from __future__ import annotations

import csv
import io
import shutil
import socket
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from genai_ingest import triage
from genai_ingest.config import Settings
from genai_ingest.failures.dlq import DeadLetterQueue, EntryStatus
from genai_ingest.failures.errors import SystemFault
from genai_ingest.models import DocStatus, utcnow
from genai_ingest.stores import open_dlq, open_store
from genai_ingest.triage import replay as triage_replay

REPO = Path(__file__).resolve().parent.parent
SEED_FILES = (
    REPO / "samples" / "unstructured_password.pdf",
    REPO / "tests" / "data" / "parse" / "derived_word_sample_truncated60.docx",
    REPO / "tests" / "data" / "parse" / "unstructured_password_protected.xlsx",
    REPO / "samples" / "docling_wiki.md",
)
PDF, DOCX, XLSX = (
    "unstructured_password.pdf",
    "derived_word_sample_truncated60.docx",
    ("unstructured_password_protected.xlsx"),
)


def seed_template(base: Path) -> Path:
    """Once per session (needs the Prefect server): ingest the seed documents with the real
    ``ingest`` flow; returns the folder holding ``docs/`` and the seeded ``state/``."""
    template = base / "dlq-seed"
    if (template / "done").exists():
        return template
    docs = template / "docs"
    docs.mkdir(parents=True)
    for path in SEED_FILES:
        shutil.copy(path, docs / path.name)
    from flows.ingest import ingest

    report = ingest(sources=[str(docs)], settings=Settings(data_dir=template / "state"))
    assert report["dlq_new"] == 3 and report["documents_indexed"] == 1, report
    (template / "done").touch()
    return template


def copy_state(template: Path, data_dir: Path) -> Path:
    """A consistent copy of the seeded database (SQLite backup) into a fresh data dir."""
    data_dir.mkdir(parents=True)
    source = sqlite3.connect(template / "state" / "genai-ingest.db")
    target = sqlite3.connect(data_dir / "genai-ingest.db")
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return data_dir


@pytest.fixture
def seeded(
    prefect_server: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> Settings:
    """Settings for a fresh copy of the seeded DLQ and index."""
    template = seed_template(tmp_path_factory.getbasetemp())
    return Settings(data_dir=copy_state(template, tmp_path / "state"))


@pytest.fixture
def dlq(seeded: Settings) -> DeadLetterQueue:
    queue = open_dlq(seeded)
    yield queue
    queue.close()


def entry_id(dlq: DeadLetterQueue, name: str) -> str:
    return next(e.entry_id for e in dlq.entries(status=None) if e.source.endswith(name))


def test_overview_counts_open_entries_by_stage_and_error_class(dlq: DeadLetterQueue) -> None:
    entries = dlq.entries(status=None)
    stats = triage.overview(entries)
    assert (stats["total"], stats["open"], stats["resolved"], stats["discarded"]) == (3, 3, 0, 0)
    assert stats["by_stage"] == {"parse": 3}
    assert stats["by_error_class"] == {"password_required": 2, "corrupt": 1}
    assert stats["oldest_open"]["name"] in (PDF, DOCX, XLSX)
    assert stats["oldest_open"]["age_hours"] >= 0
    assert stats["replays"] == 0 and stats["replay_success_rate"] is None
    by_reason = triage.timeline(entries, by="reason")
    assert by_reason["count"].sum() == 3 and by_reason["reason"].nunique() == 3
    chart = triage.timeline_chart(triage.timeline(entries, by="stage"), by="stage").to_dict()
    assert chart["mark"]["type"] == "bar"
    with pytest.raises(ValueError, match="group by"):
        triage.timeline(entries, by="source")


def test_filters_and_sorting(dlq: DeadLetterQueue) -> None:
    entries = dlq.entries(status=None)

    def names(**kwargs: object) -> list[str]:
        flt = triage.EntryFilter(**kwargs)  # type: ignore[arg-type]
        return [triage.source_name(e.source) for e in triage.filter_entries(entries, flt)]

    assert sorted(names()) == sorted([PDF, DOCX, XLSX])
    assert names(error_class="corrupt") == [DOCX]
    assert sorted(names(text="PASSWORD")) == sorted([PDF, XLSX])
    assert names(text="xlsx", stage="parse", source_type="file") == [XLSX]
    assert names(status=EntryStatus.RESOLVED.value) == []
    assert names(min_attempts=2) == []
    assert names(since=utcnow() + timedelta(hours=1)) == []
    assert len(names(since=triage.window_start("last hour"), until=utcnow())) == 3
    assert names(sort_by="name", descending=False) == sorted([PDF, DOCX, XLSX])
    with pytest.raises(ValueError, match="sort"):
        names(sort_by="traceback")
    options = triage.filter_options(entries)
    assert options["error_class"] == [triage.ALL, "corrupt", "password_required"]
    assert options["status"] == [triage.ALL, "open", "resolved", "discarded"]
    frame = triage.entries_frame(entries)
    assert list(frame.columns) == list(triage.ENTRY_COLUMNS) and len(frame) == 3


def test_detail_and_history(dlq: DeadLetterQueue) -> None:
    entry = dlq.get(entry_id(dlq, PDF))
    details = triage.entry_details(entry)
    assert details["error_class"] == "password_required" and "traceback" not in details
    history = triage.history_frame(entry)
    assert list(history["event"]) == ["failed"] and "password required" in history["detail"][0]
    assert "PasswordRequired" in entry.traceback


def test_preview_renders_pdf_first_page_with_password(dlq: DeadLetterQueue) -> None:
    raw = dlq.raw(entry_id(dlq, PDF))
    locked = triage.preview(raw, PDF)
    assert (locked.kind, locked.png) == ("none", None) and "enter its password" in locked.note
    assert "wrong password" in triage.preview(raw, PDF, password="letmein").note
    page = triage.preview(raw, PDF, password="password")
    assert page.kind == "image" and page.png.startswith(b"\x89PNG\r\n\x1a\n")
    assert "page 1 of 1" in page.note
    image = triage.preview(page.png, "page.png", max_px=100)
    assert image.kind == "image" and image.png.startswith(b"\x89PNG")
    from PIL import Image

    assert max(Image.open(io.BytesIO(image.png)).size) <= 100
    text = triage.preview(
        (REPO / "samples" / "docling_wiki.md").read_bytes(), "wiki.md", max_chars=50
    )
    assert text.kind == "text" and text.text.startswith("# IBM") and len(text.text) == 50
    assert triage.preview(dlq.raw(entry_id(dlq, DOCX)), DOCX).kind == "none"
    assert "encrypted Office" in triage.preview(dlq.raw(entry_id(dlq, XLSX)), XLSX).note
    assert triage.preview(None, "gone.pdf").note.startswith("no raw bytes")


def test_csv_export(dlq: DeadLetterQueue) -> None:
    rows = list(csv.DictReader(io.StringIO(triage.export_csv(dlq.entries(status=None)))))
    assert sorted(r["name"] for r in rows) == sorted([PDF, DOCX, XLSX])
    assert set(rows[0]) == set(triage.ENTRY_COLUMNS)
    assert {r["status"] for r in rows} == {"open"}


def test_discard_needs_a_reason_and_closes_open_entries_only(dlq: DeadLetterQueue) -> None:
    docx = entry_id(dlq, DOCX)
    with pytest.raises(ValueError, match="reason"):
        triage.discard(dlq, [docx], "  ")
    assert triage.discard(dlq, [docx], "truncated upload; re-export requested") == 1
    entry = dlq.get(docx)
    assert entry.status is EntryStatus.DISCARDED and "re-export" in entry.resolution
    assert triage.discard(dlq, [docx], "again") == 0
    assert triage.overview(dlq.entries(status=None))["discarded"] == 1


def test_overrides_are_validated_and_merged(dlq: DeadLetterQueue) -> None:
    xlsx = entry_id(dlq, XLSX)
    fix = triage.parse_overrides(
        '{"title": "Cups"}', skip_language_check=True, unsafe_content="allow"
    )
    assert fix == {
        "metadata": {"title": "Cups"},
        "skip_language_check": True,
        "unsafe_content": "allow",
    }
    assert "Overrides saved on 1 entries" in triage.set_overrides(dlq, [xlsx], fix)
    triage.set_overrides(dlq, [xlsx], triage.parse_overrides(unsafe_content="redact"))
    assert dlq.get(xlsx).overrides == {**fix, "unsafe_content": "redact"}
    row = triage.entry_row(dlq.get(xlsx))
    assert '"title": "Cups"' in row["overrides"]
    with pytest.raises(ValueError, match="never stored"):
        triage.parse_overrides('{"pdf_password": "secret"}')
    with pytest.raises(ValueError, match="JSON object"):
        triage.parse_overrides("[1, 2]")
    with pytest.raises(ValueError, match="unsafe_content"):
        triage.parse_overrides(unsafe_content="ignore")
    with pytest.raises(ValueError, match="nothing to save"):
        triage.set_overrides(dlq, [xlsx], {})


def test_replay_in_process_with_password_resolves_once(
    seeded: Settings, dlq: DeadLetterQueue
) -> None:
    pdf = entry_id(dlq, PDF)
    first = triage_replay.replay_in_process(seeded, [pdf])
    assert (first["replayed"], first["resolved"]) == (1, [])
    assert dlq.get(pdf).attempts == 2

    report = triage_replay.replay_in_process(seeded, [pdf], password="password")
    assert report["resolved"] == [pdf]
    entries = dlq.entries(status=None)
    assert triage_replay.replay_message(report, entries) == f"Replayed 1: 1 resolved ({PDF})"
    entry = dlq.get(pdf)
    assert entry.status is EntryStatus.RESOLVED and entry.overrides == {}
    store = open_store(seeded)
    try:
        assert store.get_document(pdf).status is DocStatus.INDEXED
    finally:
        store.close()
    stats = triage.overview(entries)
    assert (stats["open"], stats["resolved"]) == (2, 1)
    assert (stats["replays"], stats["replay_successes"], stats["replay_success_rate"]) == (
        2,
        1,
        0.5,
    )

    again = triage_replay.replay_in_process(seeded, [pdf], password="password")
    assert (again["replayed"], again["resolved"]) == (0, [])
    assert triage_replay.replay_message(again, entries).startswith("Nothing to replay")
    assert len(dlq.get(pdf).history) == len(entry.history)


def test_replay_in_process_uses_the_local_server(tmp_path: Path) -> None:
    """With no Prefect API configured, "Replay now" goes to the local server the CLI uses, not
    a temporary one: here its port is held by another program, the local server's clear error."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_API_PORT,
        temporary_settings,
    )

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        updates = {PREFECT_HOME: str(tmp_path), PREFECT_SERVER_API_PORT: other.getsockname()[1]}
        with (
            temporary_settings(updates=updates, restore_defaults={PREFECT_API_URL}),
            pytest.raises(SystemFault, match="PREFECT_SERVER_API_PORT"),
        ):
            triage_replay.replay_in_process(Settings(data_dir=tmp_path / "state"), ["none"])
    assert not (tmp_path / "server.pid").exists()


def test_run_action_reports_selection_and_errors(dlq: DeadLetterQueue) -> None:
    assert not triage_replay.run_action([], lambda: "never").ok
    docx = entry_id(dlq, DOCX)
    failed = triage_replay.run_action([docx], lambda: str(triage.discard(dlq, [docx], "")))
    assert not failed.ok and failed.message.startswith("ValueError") and failed.entry_ids == (docx,)
    done = triage_replay.run_action([docx], lambda: "done")
    assert done.ok and done.message == "done" and done.run is None


def test_replay_via_deployment_starts_a_flow_run(prefect_server: str, dlq: DeadLetterQueue) -> None:
    from prefect.client.orchestration import get_client

    from flows.dlq_replay import dlq_replay

    dlq_replay.to_deployment(name="triage-test").apply()
    pdf = entry_id(dlq, PDF)
    outcome = triage_replay.run_action(
        [pdf], lambda: triage_replay.replay_via_deployment([pdf], "triage-test", "pdf-password")
    )
    assert outcome.ok and outcome.run is not None
    run = outcome.run
    assert run.url == f"{prefect_server.removesuffix('/api')}/runs/flow-run/{run.flow_run_id}"
    assert run.state == "Scheduled" == triage_replay.deployment_run_state(run.flow_run_id)
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(run.flow_run_id).parameters
    assert parameters == {
        "entry_ids": [pdf],
        "skip_language_check": False,
        "password_secret_block": "pdf-password",
    }
    missing = triage_replay.run_action(
        [pdf], lambda: triage_replay.replay_via_deployment([pdf], "nope")
    )
    assert not missing.ok and "ObjectNotFound" in missing.message


def test_search_helpers(seeded: Settings, dlq: DeadLetterQueue) -> None:
    hits = triage.search_hits(seeded, "When was IBM founded?", k=3)
    assert list(hits["rank"]) == [1, 2, 3] and set(hits["name"]) == {"docling_wiki.md"}
    assert hits["headings"][0].startswith("IBM") and set(hits["pages"]) == {""}  # no pages
    assert hits["score"].is_monotonic_decreasing
    assert triage.search_hits(seeded, "IBM", filters={"format": "pdf"}).empty
    assert len(triage.search_hits(seeded, "IBM", k=2, filters={"format": triage.ALL})) == 2
    assert triage.search_hits(seeded, "  ").empty
    store = open_store(seeded)
    try:
        sources = triage.hit_documents(store, hits["doc_id"])
        assert list(sources["name"]) == ["docling_wiki.md"] and sources["chunks"][0] > 0
        stats = triage.index_stats(store, dlq)
        assert stats["documents"] == 1 and stats["chunks"] > 0 and stats["dlq_open"] == 3
        assert stats["model_id"] == "all-MiniLM-L6-v2+int8+wonly" and stats["dimension"] == 384
        options = triage.search_filter_options(store)
        assert "markdown" in options["format"] and options["source_type"] == [triage.ALL, "file"]
    finally:
        store.close()


def test_settings_from_args(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENAI_INGEST_DATA_DIR", str(tmp_path / "env"))
    assert triage.settings_from_args({}).data_dir == tmp_path / "env"
    assert triage.settings_from_args({"data-dir": str(tmp_path)}).data_dir == tmp_path
