"""The index does not depend on the order documents arrive in: of duplicate documents (and
duplicate chunks) the copy kept is the one with the smallest source URI, and a preferred copy
that arrives later takes over (the old one becomes its duplicate). Adding the preferred twin
in a later run, a replay that brings it in, a kill after it was committed, and two runs
racing on the pair all end with the chunk ids and duplicate decisions of one clean run over
the final folder. On the embedded store, and on the live Elasticsearch node when
``ELASTICSEARCH_URL`` is set.

The folder (generated from licensed fixtures): ``d_duck.md`` and its UTF-16 twin
``d_duck-utf-16.md`` (exact duplicates; ``-`` sorts before ``.``, so the twin is the copy
kept, as with ``unstructured_example-steelJIS-datasheet{,-utf-16}.html`` in the shared
corpus), ``b_wiki.md``, and ``a_mix.md``, which holds every chunk of ``b_wiki.md`` and more
(chunk-level duplicates: ``a_mix.md`` keeps them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from prefect import flow

from flows.batches import redo_displaced
from flows.dlq_replay import dlq_replay
from flows.ingest import ingest
from genai_ingest.config import Settings
from genai_ingest.models import SourceRef
from genai_ingest.run.batch import deduplicate, embed_batch
from genai_ingest.run.commit import commit
from genai_ingest.run.prepare import Prepared, prepare
from genai_ingest.run.runtime import runtime_for
from genai_ingest.run.summary import RunSummary
from tests.conftest import SAMPLES, fixture_file
from tests.es_live import CLI, ES_URL, es_settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

STORES = [
    pytest.param("sqlite", id="embedded"),
    pytest.param(
        "es",
        id="elasticsearch",
        marks=[
            pytest.mark.elasticsearch,
            pytest.mark.skipif(not ES_URL, reason="ELASTICSEARCH_URL not set"),
        ],
    ),
]
TWIN, ORIGINAL, MIX, WIKI = "d_duck-utf-16.md", "d_duck.md", "a_mix.md", "b_wiki.md"


def write_docs(folder: Path, names: set[str], *, fresh: bool = False) -> Path:
    """The documents of the module docstring that are in ``names`` (``fresh``: only those)."""
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    duck = fixture_file("docling_duck.md").read_text(encoding="utf-8")
    wiki = (SAMPLES / "docling_wiki.md").read_text(encoding="utf-8")
    novel = (SAMPLES / "unstructured_book-war-and-peace-1p.txt").read_text(encoding="utf-8")
    contents = {
        ORIGINAL: duck.encode("utf-8"),
        TWIN: duck.encode("utf-16"),
        WIKI: wiki.encode("utf-8"),
        MIX: (wiki + "\n\n# Appendix\n\n" + novel).encode("utf-8"),
        "e_readme.rst": fixture_file("unstructured_README.rst").read_bytes(),
        "f_guide.asciidoc": fixture_file("docling_asciidoc_02.asciidoc").read_bytes(),
    }
    for name in names:
        (folder / name).write_bytes(contents[name])
    return folder


ALL = {TWIN, ORIGINAL, MIX, WIKI, "e_readme.rst", "f_guide.asciidoc"}


def settings_for(kind: str, data_dir: Path, alias: str, **update: object) -> Settings:
    if kind == "sqlite":
        settings = Settings(data_dir=data_dir)
    else:
        settings = es_settings(ES_URL or "", alias, data_dir)
    return settings.model_copy(update=update)


def decisions(settings: Settings) -> dict[str, tuple[str, str | None]]:
    """File name -> (status, file name of the copy it duplicates) of every ledger row."""
    records = list(runtime_for(settings).store.iter_documents())
    names = {r.doc_id: r.source.rsplit("/", 1)[-1] for r in records}
    return {names[r.doc_id]: (r.status.value, names.get(r.duplicate_of or "")) for r in records}


def index_of(settings: Settings) -> tuple[str, dict[str, tuple[str, str | None]]]:
    return runtime_for(settings).store.stats().chunk_ids_sha256, decisions(settings)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one folder every test fills (ids derive from source URIs: the clean run and the
    runs under test must read the same paths)."""
    return tmp_path_factory.mktemp("arrival") / "docs"


@pytest.fixture(scope="module")
def clean(folder: Path, tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> tuple:
    """One clean run over the final folder: its chunk-id digest and duplicate decisions."""
    write_docs(folder, ALL, fresh=True)
    settings = Settings(data_dir=tmp_path_factory.mktemp("clean-state"))
    report = ingest(sources=[str(folder)], settings=settings)
    assert report["documents_failed"] == 0 and report["chunks_duplicate"] > 0
    digest, decided = index_of(settings)
    assert decided[ORIGINAL] == ("duplicate", TWIN), "the smallest URI is the copy kept"
    assert decided[WIKI] == ("indexed", None) and decided[MIX] == ("indexed", None)
    return digest, decided


@pytest.mark.parametrize("kind", STORES)
def test_preferred_copies_added_in_a_later_run_take_over(
    kind: str, folder: Path, clean: tuple, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    alias = request.getfixturevalue("alias") if kind == "es" else ""
    write_docs(folder, ALL - {TWIN, MIX}, fresh=True)
    settings = settings_for(kind, tmp_path / "state", alias)
    ingest(sources=[str(folder)], settings=settings)
    assert decisions(settings)[ORIGINAL] == ("indexed", None)

    write_docs(folder, {TWIN, MIX})  # both rank before copies already indexed
    report = ingest(sources=[str(folder)], settings=settings)
    assert report["documents_failed"] == 0
    assert report["documents_repointed"] == 2, "d_duck.md (document) and b_wiki.md (chunks)"
    assert index_of(settings) == clean

    again = ingest(sources=[str(folder)], settings=settings)
    assert again["documents_unchanged"] == len(ALL) and again["documents_repointed"] == 0


@pytest.mark.parametrize("kind", STORES)
def test_replaying_the_preferred_copy_re_points_the_duplicate(
    kind: str, folder: Path, clean: tuple, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    alias = request.getfixturevalue("alias") if kind == "es" else ""
    write_docs(folder, ALL - {TWIN}, fresh=True)
    (folder / TWIN).write_bytes(b"")  # fails (empty) and is dead-lettered
    settings = settings_for(kind, tmp_path / "state", alias)
    report = ingest(sources=[str(folder)], settings=settings)
    [failure] = report["failures"]
    assert failure["source"].endswith(TWIN)
    assert decisions(settings)[ORIGINAL] == ("indexed", None)

    write_docs(folder, {TWIN})  # fixed at the source, then replayed
    replay = dlq_replay(entry_ids=[failure["doc_id"]], settings=settings)
    assert replay["resolved"] == [failure["doc_id"]] and replay["documents_repointed"] == 1
    assert index_of(settings) == clean


def _ledger_row(db: Path, name: str) -> dict:
    """The ledger row of file ``name``, read from another connection ({} while unreadable)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            rows = conn.execute("SELECT record FROM documents").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return {}
    records = (json.loads(r) for (r,) in rows)
    return next((r for r in records if r["source"].endswith(f"/{name}")), {})


def test_killed_after_the_preferred_copy_was_committed_then_resumed(
    folder: Path, clean: tuple, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    later = {TWIN, "e_readme.rst", "f_guide.asciidoc"}  # the twin, then work after it
    write_docs(folder, ALL - later, fresh=True)
    settings = Settings(data_dir=tmp_path / "state")
    ingest(sources=[str(folder)], settings=settings)
    write_docs(folder, later)
    env = {**cli_env, "GENAI_INGEST_DATA_DIR": str(settings.data_dir)}
    env["GENAI_INGEST_DOCUMENTS_PER_BATCH"] = "1"
    run = subprocess.Popen(
        [CLI, "run", str(folder), "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while _ledger_row(settings.database_path, TWIN).get("status") != "indexed":
        assert run.poll() is None, "the run ended before the twin was committed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(30)
    original = _ledger_row(settings.database_path, ORIGINAL)
    assert original["status"] == "indexed", "killed before the re-point was done"
    assert (
        original["metadata"]["displaced_by"] == _ledger_row(settings.database_path, TWIN)["doc_id"]
    ), "the re-point is on the ledger before the twin's row: it survives the kill"

    resumed = subprocess.run(
        [CLI, "run", str(folder), "--json"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert index_of(settings) == clean


def _prepared(path: Path, settings: Settings) -> Prepared:
    rt = runtime_for(settings)
    outcome = prepare(SourceRef(uri=path.resolve().as_uri(), name=path.name), rt, RunSummary())
    assert isinstance(outcome, Prepared), outcome
    return outcome


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("preferred_commits_first", [True, False], ids=["twin-first", "twin-last"])
def test_two_workers_racing_on_a_duplicate_pair_end_with_the_clean_index(
    kind: str,
    preferred_commits_first: bool,
    folder: Path,
    clean: tuple,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Two workers (two runtimes on one store) each deduplicate one copy before either
    commits, so neither sees the other; the recheck after the second commit re-points."""
    alias = request.getfixturevalue("alias") if kind == "es" else ""
    write_docs(folder, ALL - {TWIN, ORIGINAL}, fresh=True)
    settings = settings_for(kind, tmp_path / "state", alias)
    ingest(sources=[str(folder)], settings=settings)
    write_docs(folder, {TWIN, ORIGINAL})  # left to the two workers
    workers = [settings, settings.model_copy(update={"documents_per_batch": 7})]
    summary = RunSummary()
    docs = {
        name: _prepared(folder / name, worker)
        for name, worker in zip((TWIN, ORIGINAL), workers, strict=True)
    }
    for name, worker in zip((TWIN, ORIGINAL), workers, strict=True):
        kept, failed = deduplicate([docs[name]], runtime_for(worker), summary)
        assert kept and not failed and docs[name].duplicate_of is None  # neither sees the other

    order = [TWIN, ORIGINAL] if preferred_commits_first else [ORIGINAL, TWIN]
    redo: set[str] = set()
    for name in order:
        worker = workers[(TWIN, ORIGINAL).index(name)]
        embedded = embed_batch([docs[name]], runtime_for(worker), summary)
        redo |= commit(docs[name], embedded.chunks[0], runtime_for(worker), summary)
    assert redo == {docs[ORIGINAL].doc_id}, "the copy ranked after is the one redone"

    flow(name="redo-displaced")(redo_displaced)(redo, settings, summary)
    assert index_of(settings) == clean


@pytest.mark.parametrize("kind", STORES)
def test_two_concurrent_runs_end_with_the_clean_index(
    kind: str,
    folder: Path,
    clean: tuple,
    tmp_path: Path,
    cli_env: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    alias = request.getfixturevalue("alias") if kind == "es" else ""
    write_docs(folder, ALL, fresh=True)
    settings = settings_for(kind, tmp_path / "state", alias)
    env = {**cli_env, "GENAI_INGEST_DATA_DIR": str(settings.data_dir)}
    env |= {"GENAI_INGEST_DOCUMENTS_PER_BATCH": "1", "GENAI_INGEST_POLICIES__CLAIMS__POLL_S": "1"}
    if kind == "es":
        env |= {"GENAI_INGEST_STORE_URL": ES_URL or "", "GENAI_INGEST_ELASTICSEARCH__INDEX": alias}
    runs = [
        subprocess.Popen(
            [CLI, "run", str(folder), "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    reports = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        reports.append(json.loads(out))
    assert all(r["documents_failed"] == 0 for r in reports), reports
    assert index_of(settings) == clean, reports
