"""Concurrent runs on one store: document claims are atomic across processes, two
``genai-ingest run`` processes on the same folder split the work and leave the clean run's
index, and a killed worker's claims are taken over (once they expire, or at once when its pid
is gone from this host). On the embedded store, and on the live Elasticsearch node when
``ELASTICSEARCH_URL`` is set."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genai_ingest.config import Settings
from genai_ingest.failures.policies import ClaimPolicy
from genai_ingest.run.claims import ClaimKeeper
from genai_ingest.stores import open_claims, open_store
from genai_ingest.stores.base import DocumentClaims
from tests.conftest import SAMPLES, cli_stats

ES_URL = os.environ.get("ELASTICSEARCH_URL")
ES_SKIP = "ELASTICSEARCH_URL not set: live Elasticsearch claims tests skipped"
BIN = Path(sys.executable).parent
RUN_TIMEOUT_S = 420
STORES = [
    pytest.param("sqlite", id="embedded"),
    pytest.param("es", id="elasticsearch", marks=pytest.mark.skipif(not ES_URL, reason=ES_SKIP)),
]


def store_settings(kind: str, data_dir: Path, alias: str) -> Settings:
    """Settings for the embedded store in ``data_dir`` or a fresh alias on the live node."""
    if kind == "sqlite":
        return Settings(data_dir=data_dir)
    return Settings(data_dir=data_dir, store_url=ES_URL, elasticsearch={"index": alias})


@pytest.fixture
def alias() -> Iterator[str]:
    """A fresh Elasticsearch alias (its claims index is deleted afterwards)."""
    name = f"gi-claims-{uuid.uuid4().hex[:8]}"
    yield name
    if ES_URL:
        client = _es_client()
        names = list(client.indices.get(index=f"{name}-*", allow_no_indices=True))
        if names:
            client.indices.delete(index=names)


def _es_client() -> Any:
    from genai_ingest.stores.elasticsearch import client_from_settings

    return client_from_settings(Settings(store_url=ES_URL))


def _claims(kind: str, data_dir: Path, alias: str) -> DocumentClaims:
    settings = store_settings(kind, data_dir, alias)
    return open_claims(settings, open_store(settings))


# --- the claims contract ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
def test_claim_is_exclusive_until_released_or_expired(
    kind: str, tmp_path: Path, alias: str
) -> None:
    claims = _claims(kind, tmp_path, alias)
    assert claims.claim("doc-1", "worker-a", lease_s=60)
    assert not claims.claim("doc-1", "worker-b", lease_s=60)
    assert claims.claim("doc-1", "worker-a", lease_s=60)  # one's own claim is renewed
    claims.release(["doc-1"], "worker-b")  # not b's to release
    assert claims.holder("doc-1")[0] == "worker-a"  # type: ignore[index]
    claims.release(["doc-1"], "worker-a")
    assert claims.holder("doc-1") is None
    assert claims.claim("doc-1", "worker-b", lease_s=60)

    assert claims.claim("doc-2", "worker-a", lease_s=0.5)
    time.sleep(1.0)
    assert claims.claim("doc-2", "worker-b", lease_s=60), "an expired claim is taken over"
    assert claims.renew(["doc-2"], "worker-a", lease_s=60) == {"doc-2"}, "a's claim is lost"
    assert claims.renew(["doc-2"], "worker-b", lease_s=60) == set()


def _race(kind: str, data_dir: str, alias: str, owner: str, doc_ids: list[str]) -> list[str]:
    claims = _claims(kind, Path(data_dir), alias)
    return [d for d in doc_ids if claims.claim(d, owner, lease_s=60)]


@pytest.mark.parametrize("kind", STORES)
def test_racing_processes_each_claim_a_document_once(kind: str, tmp_path: Path, alias: str) -> None:
    doc_ids = [f"doc-{i:03d}" for i in range(60)]
    _claims(kind, tmp_path, alias).holder("doc-000")  # create the table / index first
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        won = pool.starmap(
            _race, [(kind, str(tmp_path), alias, f"worker-{n}", doc_ids) for n in range(4)]
        )
    assert sorted(d for ids in won for d in ids) == doc_ids  # every doc exactly once


def test_heartbeat_keeps_claims_alive_and_reports_them_lost(tmp_path: Path) -> None:
    claims = _claims("sqlite", tmp_path, "")
    keeper = ClaimKeeper(claims, ClaimPolicy(lease_s=0.6), owner="worker-a")
    assert keeper.claim("doc-1")
    time.sleep(1.5)  # 2.5 leases: alive only if the heartbeat renewed it
    assert keeper.state_of("doc-1", time.time()) == "live"
    assert not claims.claim("doc-1", "worker-b", lease_s=60)
    keeper.release(["doc-1"])
    assert keeper.state_of("doc-1", time.time()) == "free"


def test_claims_of_a_dead_local_worker_are_taken_over_at_once(tmp_path: Path) -> None:
    claims = _claims("sqlite", tmp_path, "")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead = f"{socket.gethostname()}:{gone.stdout.strip()}:0000"
    far = "another-host:1:0000"
    assert claims.claim("doc-1", dead, lease_s=600) and claims.claim("doc-2", far, lease_s=600)
    assert claims.claim("doc-3", far, lease_s=0.5)
    keeper = ClaimKeeper(claims, ClaimPolicy(lease_s=60), owner="worker-a")
    time.sleep(1.0)
    assert keeper.state_of("doc-1", time.time()) == "expired"
    assert keeper.claim("doc-1"), "its pid is gone: no need to wait for the lease"
    assert keeper.state_of("doc-2", time.time()) == "live"
    assert not keeper.claim("doc-2"), "a live claim of another host is respected"
    assert keeper.claim("doc-3"), "an expired claim of another host is taken over"


# --- real runs ------------------------------------------------------------------------------


def _env(cli_env: dict[str, str], kind: str, alias: str, lease_s: float = 120) -> dict[str, str]:
    env = {
        **cli_env,
        "GENAI_INGEST_POLICIES__CLAIMS__LEASE_S": str(lease_s),
        "GENAI_INGEST_POLICIES__CLAIMS__POLL_S": "1",
    }
    if kind == "es":
        env |= {"GENAI_INGEST_STORE_URL": ES_URL or "", "GENAI_INGEST_ELASTICSEARCH__INDEX": alias}
    return env


def _start(env: dict[str, str], data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "genai-ingest"), "run", str(SAMPLES), "--json", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killed with its parser workers
    )


def _report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out)


class CleanRun:
    """A clean single-process run of samples/ on the embedded store, started beside the runs
    under test (same code, same time) and compared with them."""

    def __init__(self, cli_env: dict[str, str], data_dir: Path) -> None:
        self.env, self.data_dir = cli_env, data_dir
        self.proc = _start(cli_env, data_dir)

    def result(self) -> dict[str, Any]:
        return {"report": _report(self.proc), "stats": cli_stats(self.env, self.data_dir)}


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORES)
def test_two_runs_two_seconds_apart_split_the_work(
    kind: str, cli_env: dict[str, str], tmp_path: Path, alias: str
) -> None:
    env = _env(cli_env, kind, alias)
    clean = CleanRun(cli_env, tmp_path / "clean")
    first = _start(env, tmp_path / "state")
    time.sleep(2)
    second = _start(env, tmp_path / "state")
    reports = [_report(first), _report(second)]
    clean_run = clean.result()

    stats = cli_stats(env, tmp_path / "state")
    assert stats["chunk_ids_sha256"] == clean_run["stats"]["chunk_ids_sha256"], (stats, reports)
    assert stats["documents"] == clean_run["stats"]["documents"]
    computed = sum(r["embeddings_computed"] for r in reports)
    assert computed <= 1.25 * clean_run["report"]["embeddings_computed"]
    seen = clean_run["report"]["documents_seen"]
    for report in reports:  # every document accounted for by each run
        finished = ("indexed", "unchanged", "failed", "duplicate", "skipped_claimed")
        assert sum(report[f"documents_{k}"] for k in finished) == seen, report
    assert sum(r["documents_skipped_claimed"] for r in reports) > 0, "the runs did not overlap"


def _claims_held(kind: str, data_dir: Path, alias: str) -> int:
    if kind == "sqlite":
        path = data_dir / "genai-ingest.db"
        if not path.exists():
            return 0
        with sqlite3.connect(path, timeout=30) as conn:
            try:
                return conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
            except sqlite3.OperationalError:
                return 0
    found = _es_client().options(ignore_status=(404, 503)).count(index=f"{alias}-claims")
    return int(found.get("count", 0))


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORES)
def test_a_killed_workers_claims_are_taken_over(
    kind: str, cli_env: dict[str, str], tmp_path: Path, alias: str
) -> None:
    lease_s = 8.0
    env = _env(cli_env, kind, alias, lease_s=lease_s)
    clean = CleanRun(cli_env, tmp_path / "clean")
    victim = _start(env, tmp_path / "state")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while _claims_held(kind, tmp_path / "state", alias) == 0:
        assert victim.poll() is None, "the run ended before it held a claim"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)
    assert _claims_held(kind, tmp_path / "state", alias) > 0, "the dead worker left claims"

    report = _report(_start(env, tmp_path / "state"))
    stats = cli_stats(env, tmp_path / "state")
    assert stats["chunk_ids_sha256"] == clean.result()["stats"]["chunk_ids_sha256"]
    assert report["documents_skipped_claimed"] == 0  # nothing left to the dead worker
    assert _claims_held(kind, tmp_path / "state", alias) == 0, "every claim released"


CHUNKERS_IN_THREADS = """
import sys, threading
from genai_ingest.config import Settings
from genai_ingest.run.runtime import Runtime

rt = Runtime(Settings(data_dir=sys.argv[1]))
barrier, failures = threading.Barrier(4), []

def build():
    barrier.wait()
    try:
        assert rt.chunker.split("doc", "One sentence. Another one.", {})
    except Exception as exc:
        failures.append(repr(exc))

threads = [threading.Thread(target=build) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not failures, failures
assert "embedder" not in vars(rt), "chunking loaded the embedding model"
assert "torch" not in sys.modules, "chunking imported torch"
"""


def test_first_chunkers_built_in_four_threads_at_once(tmp_path: Path) -> None:
    """A fresh process: the threads race through transformers' first (lazy) import, which
    once failed documents as corrupt; chunking reads the tokenizer, never loads the model (nor
    imports torch)."""
    done = subprocess.run(
        [sys.executable, "-c", CHUNKERS_IN_THREADS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_an_import_error_is_a_missing_dependency_not_a_corrupt_document() -> None:
    from genai_ingest.failures.errors import MissingDependency, Stage, classify

    error = classify(ImportError("cannot import name 'AutoTokenizer'"), Stage.CHUNK)
    assert isinstance(error, MissingDependency) and error.replayable
