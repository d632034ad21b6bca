"""Crash resume: SIGKILL a real ``genai-ingest run`` at several points, re-run, and converge to
the index of an uninterrupted run without re-embedding anything already cached or stored.

The kills are chained in one data dir (each re-run resumes the previous crash and is itself
killed further along), then a last run completes. Kill points are chosen by polling the
embedded SQLite database read-only from the test: after the first chunks appear, after about
half of the clean run's chunks, and when the ledger has all documents but the last one. After
each kill no parser worker process (pebble, spawned by ``genai_ingest.parse.isolation``) may outlive
the killed run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from flows.ingest import ingest
from genai_ingest.config import Settings
from tests.conftest import SAMPLES, fixture_file

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "genai-ingest")
#: Extra real documents, renamed so they sort after the samples: the last batch (of one
#: document, ``x_kvp.html``) is a real document to embed, so "all but one" is a real window.
EXTRAS = {
    "unstructured_docx-tables.docx": "x_docx-tables.docx",
    "docling_duck.md": "x_duck.md",
    "docling_kvp_data_example.html": "x_kvp.html",
}
RUN_TIMEOUT_S = 240


@dataclass
class DbState:
    chunks: int = 0
    ledger: int = 0
    orphans: int = 0


def db_state(db: Path) -> DbState | None:
    """What the database holds now (read-only; None while it is not there or busy)."""
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.OperationalError:
        return None
    try:
        chunks = conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        ledger = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        orphans = conn.execute(
            "SELECT COUNT(*) FROM chunks WHERE doc_id NOT IN (SELECT doc_id FROM documents)"
        ).fetchone()[0]
        return DbState(chunks, ledger, orphans)
    except sqlite3.OperationalError:  # tables not created yet, or a write in progress
        return None
    finally:
        conn.close()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def stats(env: dict[str, str], data_dir: Path) -> dict:
    return json.loads(cli(env, "stats", "--json", "--data-dir", str(data_dir)).stdout)


def run_and_kill(
    env: dict[str, str], docs: Path, data_dir: Path, when: Callable[[DbState], bool], log: Path
) -> tuple[DbState, list[str]]:
    """Start a run, SIGKILL it as soon as ``when(state)`` holds; returns the state seen at the
    kill and the run's child processes that were still alive a while after the kill."""
    db = data_dir / "genai-ingest.db"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [CLI, "run", str(docs), "--json", "--data-dir", str(data_dir)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            state = db_state(db)
            if state is not None and when(state):
                break
            if proc.poll() is not None:
                pytest.fail(
                    f"the run ended (rc {proc.returncode}) before the kill point\n"
                    + log.read_text()[-3000:]
                )
            time.sleep(0.02)
        else:
            pytest.fail("kill point not reached in time")
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, alive = psutil.wait_procs(children, timeout=15)
    survivors = []
    for orphan in alive:  # ours (descendants of the run we started): do not leak them
        with contextlib.suppress(psutil.NoSuchProcess):
            survivors.append(f"{orphan.pid} {' '.join(orphan.cmdline())[:120]}")
            orphan.kill()
    return state, survivors


def chunk_hashes(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {r[0] for r in conn.execute("SELECT text_hash FROM chunks")}


def cached_hashes(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {r[0] for r in conn.execute("SELECT text_hash FROM embedding_cache")}


def assert_consistent(db: Path) -> None:
    """No duplicate chunk ids, no orphan chunks, no ledger entry pointing at a missing chunk."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        chunks = conn.execute("SELECT chunk_id, doc_id FROM chunks").fetchall()
        records = [json.loads(r[0]) for r in conn.execute("SELECT record FROM documents")]
    ids = [cid for cid, _ in chunks]
    assert len(ids) == len(set(ids)), "duplicate chunk ids"
    listed = {cid: r["doc_id"] for r in records for cid in r["chunk_ids"]}
    assert sum(len(r["chunk_ids"]) for r in records) == len(listed), "a chunk listed twice"
    orphans = [(cid, doc) for cid, doc in chunks if listed.get(cid) != doc]
    assert not orphans, f"chunks not listed by their document's ledger row: {orphans[:5]}"
    assert set(listed) == set(ids), "ledger rows list chunks that are not stored"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder)
    for source, name in EXTRAS.items():
        shutil.copyfile(fixture_file(source), folder / name)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def test_sigkill_at_three_points_then_rerun_converges_to_the_clean_index(
    cli_env: dict[str, str], docs: Path, tmp_path: Path
) -> None:
    env = {**cli_env, "GENAI_INGEST_DOCUMENTS_PER_BATCH": "2"}
    n_docs = len(list(docs.iterdir()))

    clean_dir = tmp_path / "clean"  # the uninterrupted run (in-process: same flow, quicker)
    clean = ingest(
        sources=[str(docs)], settings=Settings(data_dir=clean_dir, documents_per_batch=2)
    )
    clean_stats = stats(env, clean_dir)
    assert clean["documents_seen"] == n_docs and clean["documents_failed"] == 1
    assert clean_stats["chunks"] == clean["chunks_written"] >= 20

    data_dir = tmp_path / "crashed"
    db = data_dir / "genai-ingest.db"
    half = clean_stats["chunks"] // 2
    kill_points: list[tuple[str, Callable[[DbState, DbState], bool]]] = [
        ("first chunks stored", lambda s, start: s.chunks > 0),
        ("about half the chunks", lambda s, start: s.chunks >= max(half, start.chunks + 1)),
        ("all documents but one", lambda s, start: s.ledger >= max(n_docs - 1, start.ledger + 1)),
    ]
    seen: list[tuple[str, DbState]] = []
    for i, (name, condition) in enumerate(kill_points):
        start = db_state(db) or DbState()
        state, orphans = run_and_kill(
            env,
            docs,
            data_dir,
            lambda s, c=condition, st=start: c(s, st),  # type: ignore[misc]
            tmp_path / f"killed-{i}.log",
        )
        seen.append((name, state))
        assert not orphans, f"processes outlived the killed run ({name}): {orphans}"
    assert seen[-1][1].ledger < n_docs, "the last kill came before the run finished"
    print("kill points:", seen)

    cache_before = cached_hashes(db)
    resumed = json.loads(cli(env, "run", str(docs), "--json", "--data-dir", str(data_dir)).stdout)
    resumed_stats = stats(env, data_dir)

    assert resumed_stats == clean_stats, "the resumed index differs from the clean run's"
    assert resumed["embeddings_computed"] < clean["embeddings_computed"]
    assert chunk_hashes(db) <= cached_hashes(db)
    assert resumed["embeddings_computed"] == len(cached_hashes(db) - cache_before), (
        "the re-run embedded texts (chunks, windows) whose vectors were already cached"
    )
    assert len(cached_hashes(db)) == len(cached_hashes(clean_dir / "genai-ingest.db"))
    assert_consistent(db)
