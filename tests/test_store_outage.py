"""A real outage of the embedded store in the middle of a run: another process holds an
EXCLUSIVE lock on the SQLite database (``BEGIN EXCLUSIVE``), so every write of the run fails
with "database is locked" (``StoreUnavailable``) until it lets go.

(a) An outage shorter than the ``store_write`` budget: writes are retried with backoff and the
    run completes, every document indexed, DLQ empty.
(b) An outage longer than the pause bound: the affected documents are dead-lettered as
    transient; the DLQ lives in the same locked file, so they land in the local spool; the run
    waits for the store at its end and replays them itself; the final index equals a clean
    run's. (c) A store still down at the end of the run: the entries stay open, and the
    ``dlq-replay`` deployment's scheduled parameters replay them later.

The embedding cache is pre-warmed from the clean run so that the only writes are the store's
(the cache's own writes wait on a locked database with a fixed 60 s timeout: see
docs/fault-tolerance.md)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from flows.dlq_replay import dlq_replay
from flows.ingest import ingest
from genai_ingest.config import Settings
from genai_ingest.failures.policies import (
    BreakerPolicy,
    DelayedReplayPolicy,
    Policies,
    RetryPolicy,
    TaskRetryPolicy,
)
from genai_ingest.run.runtime import runtime_for
from genai_ingest.run.spool import FailureSpool
from tests.conftest import REPO, SAMPLES, fixture_file

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

CLI = str(Path(sys.executable).parent / "genai-ingest")
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The samples (without the password-protected PDF, so a clean run has an empty DLQ) plus
    one more document: 8 documents, 4 batches of 2."""
    folder = tmp_path_factory.mktemp("outage") / "docs"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*password*"))
    shutil.copyfile(fixture_file("docling_duck.md"), folder / "x_duck.md")
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def settings_for(data_dir: Path, **policies: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        documents_per_batch=2,
        sqlite_busy_timeout_s=0.2,
        policies=Policies(**policies),
    )


@pytest.fixture(scope="module")
def clean(docs: Path, tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> Settings:
    settings = settings_for(tmp_path_factory.mktemp("clean") / "state")
    report = ingest(sources=[str(docs)], settings=settings)
    assert report["documents_indexed"] == len(list(docs.iterdir())) and report["dlq_new"] == 0
    return settings


def warm_cache(source: Settings, target: Settings) -> None:
    """Copy the clean run's embedding cache into ``target``'s (not yet existing) database."""
    target.data_dir.mkdir(parents=True)
    conn = sqlite3.connect(target.database_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE embedding_cache (model_id TEXT, text_hash TEXT, vector BLOB,"
            " PRIMARY KEY (model_id, text_hash))"
        )
        conn.execute("ATTACH DATABASE ? AS clean", [str(source.database_path)])
        conn.execute("INSERT INTO embedding_cache SELECT * FROM clean.embedding_cache")
        conn.execute("DETACH DATABASE clean")
    finally:
        conn.close()


def ledger_rows(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            return conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


class Outage:
    """Holds an EXCLUSIVE lock on the database from another process, from the moment the run
    has committed its first document until ``release_when()`` holds (checked every 50 ms)."""

    def __init__(self, db: Path, release_when: Callable[[float], bool]) -> None:
        self.db = db
        self.release_when = release_when
        self.started_at: float | None = None
        self.seconds = 0.0
        self.released = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while ledger_rows(self.db) < 1:
                if self.released.wait(0.02):
                    return
            locker = subprocess.Popen(
                [sys.executable, "-c", LOCKER, str(self.db)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
                self.started_at = time.monotonic()
                while not self.released.is_set() and not self.release_when(self.elapsed):
                    time.sleep(0.05)
                self.seconds = self.elapsed
                assert locker.stdin is not None
                locker.stdin.write("\n")
                locker.stdin.flush()
                assert locker.wait(timeout=30) == 0
            finally:
                if locker.poll() is None:
                    locker.kill()
                    locker.wait()
        except BaseException as exc:
            self.error = exc

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def release(self) -> None:
        self.released.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive() and self.error is None, self.error

    @contextmanager
    def during(self) -> Iterator[Outage]:
        self._thread.start()
        try:
            yield self
        finally:
            self.release()


def store_errors(settings: Settings) -> int:
    return runtime_for(settings).retry_stats.errors["store_unavailable"]


def test_a_short_outage_is_ridden_out_by_retries(
    docs: Path, clean: Settings, tmp_path: Path
) -> None:
    settings = settings_for(
        tmp_path / "state",
        store_write=RetryPolicy(attempts=50, initial_s=0.1, max_s=0.5, jitter_s=0.1, budget_s=15),
        store_breaker=BreakerPolicy(failure_threshold=50, cooldown_s=0.5),
    )
    warm_cache(clean, settings)
    # at least 1.5 s, and until the run has met the lock at least once (at most 4 s)
    outage = Outage(
        settings.database_path,
        lambda elapsed: elapsed >= 4 or (elapsed >= 1.5 and store_errors(settings) > 0),
    )
    with outage.during():
        report = ingest(sources=[str(docs)], settings=settings)
    rt = runtime_for(settings)
    stats = rt.retry_stats.summary()
    print(f"outage {outage.seconds:.1f}s, retry stats {stats}")

    assert outage.seconds < settings.policies.store_write.budget_s
    assert stats["errors"].get("store_unavailable", 0) > 0 and stats["retries"] > 0
    assert stats["gave_up"] == 0 and stats["slept_s"] > 0
    assert report["documents_indexed"] == len(list(docs.iterdir()))
    assert report["dlq_new"] == 0 and rt.dlq.entries() == []
    assert FailureSpool(settings.data_dir).pending() == []
    assert rt.store.stats() == runtime_for(clean).store.stats()


def test_an_outage_past_the_retry_budget_is_paused_through(
    docs: Path, clean: Settings, tmp_path: Path
) -> None:
    """Retries give up after 1 s, the lock is held 6 s: the open breaker pauses the work
    (``pause_s`` 60) instead of failing it; nothing fails, nothing is dead-lettered."""
    settings = settings_for(
        tmp_path / "state",
        store_write=RetryPolicy(attempts=3, initial_s=0.05, max_s=0.2, jitter_s=0.05, budget_s=1),
        store_breaker=BreakerPolicy(failure_threshold=3, cooldown_s=0.5, pause_s=60),
        task=TaskRetryPolicy(retries=0),
    )
    warm_cache(clean, settings)
    outage = Outage(settings.database_path, lambda elapsed: elapsed >= 6)
    with outage.during():
        report = ingest(sources=[str(docs)], settings=settings)
    stats = runtime_for(settings).retry_stats.summary()
    print(f"outage {outage.seconds:.1f}s, retry stats {stats}")
    assert outage.seconds >= 6 > settings.policies.store_write.budget_s
    assert stats["pauses"] > 0 and stats["paused_s"] > 0
    assert report["documents_failed"] == 0 and report["dlq_new"] == 0
    assert FailureSpool(settings.data_dir).pending() == []
    assert runtime_for(settings).store.stats() == runtime_for(clean).store.stats()


def test_a_long_outage_dead_letters_via_the_spool_and_the_run_replays_them(
    docs: Path, clean: Settings, tmp_path: Path
) -> None:
    """An outage (8 s) longer than the pause bound (1 s): documents are dead-lettered as
    transient, into the spool (the DLQ is in the locked file); the run waits for the store
    at its end and replays them itself (``delayed_replay``): nobody runs a command."""
    settings = settings_for(
        tmp_path / "state",
        store_write=RetryPolicy(attempts=3, initial_s=0.05, max_s=0.2, jitter_s=0.05, budget_s=1),
        store_breaker=BreakerPolicy(failure_threshold=3, cooldown_s=0.5, pause_s=1.0),
        task=TaskRetryPolicy(retries=1, backoff_factor_s=0.1, jitter_factor=0),
        delayed_replay=DelayedReplayPolicy(wait_s=120),
    )
    warm_cache(clean, settings)
    outage = Outage(settings.database_path, lambda elapsed: elapsed >= 8)
    with outage.during():
        report = ingest(sources=[str(docs)], settings=settings)
    rt = runtime_for(settings)
    print(f"outage {outage.seconds:.1f}s, failures {report['failures']}")

    failures = report["failures"]
    failed = {f["doc_id"] for f in failures}
    assert failed and {f["error_kind"] for f in failures} == {"transient"}
    assert {f["error_class"] for f in failures} <= {"store_unavailable", "circuit_open"}
    assert report["replayed_after_run"] == {
        "replayed": len(failed),
        "resolved": len(failed),
        "left_open": 0,
    }
    assert report["dlq_open"] == 0 and FailureSpool(settings.data_dir).pending() == []
    assert rt.store.stats() == runtime_for(clean).store.stats()
    entries = rt.dlq.entries(status=None)
    assert {e.doc_id for e in entries} == failed
    for entry in entries:  # the failure (via the spool) and its resolution, both kept
        assert entry.status.value == "resolved" and entry.error_kind == "transient"
        assert entry.history[0]["error_class"] in {"store_unavailable", "circuit_open"}
        assert entry.history[-1]["status"] == "resolved"


def test_a_store_still_down_after_the_wait_is_left_to_the_schedule(
    docs: Path, clean: Settings, tmp_path: Path
) -> None:
    """The store is locked until the run is over: the end-of-run wait gives up and the
    entries stay open (spooled); ``dlq_replay`` as the ``dlq-replay`` deployment's schedule
    runs it (transient entries only) indexes them, and a second pass finds nothing to do."""
    settings = settings_for(
        tmp_path / "state",
        store_write=RetryPolicy(attempts=3, initial_s=0.05, max_s=0.2, jitter_s=0.05, budget_s=1),
        store_breaker=BreakerPolicy(failure_threshold=3, cooldown_s=0.5, pause_s=1.0),
        task=TaskRetryPolicy(retries=0),
        delayed_replay=DelayedReplayPolicy(wait_s=2),
    )
    warm_cache(clean, settings)
    outage = Outage(settings.database_path, lambda elapsed: False)  # until the run is over
    with outage.during():
        report = ingest(sources=[str(docs)], settings=settings)
        spooled = {p.stem for p in FailureSpool(settings.data_dir).pending()}
    failed = {f["doc_id"] for f in report["failures"]}
    assert failed and failed == spooled
    assert report["replayed_after_run"]["left_open"] == len(failed)

    schedule = scheduled_replay_parameters()
    replayed = dlq_replay(settings=settings, **schedule)
    assert replayed["replayed"] == len(failed) == len(replayed["resolved"])
    assert FailureSpool(settings.data_dir).pending() == []
    assert runtime_for(settings).store.stats() == runtime_for(clean).store.stats()
    assert dlq_replay(settings=settings, **schedule)["replayed"] == 0


def scheduled_replay_parameters() -> dict[str, object]:
    """The parameters of the ``dlq-replay`` deployment's schedule in prefect.yaml."""
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    [deployment] = [d for d in config["deployments"] if d["name"] == "dlq-replay"]
    [schedule] = deployment["schedules"]
    assert schedule["interval"] > 0 and schedule["active"]
    return schedule["parameters"]
