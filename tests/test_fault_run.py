"""The ``ingest`` flow against real HTTP embedding servers with injected faults
(``tests/fault_server.py``: 127.0.0.1, real vectors from the local model).

* ~30 % of requests fail (429 with ``Retry-After``, 503, dropped connections): every document
  is indexed, no duplicate chunk ids, the index equals an in-process-model run's (same chunk
  ids, same vectors), and the retries were counted.
* Primary hard-down (connection refused) with a fallback serving the same model: indexed via
  the fallback.
* Primary down with only a fallback of another model: the documents wait in the DLQ as
  transient, the mismatched fallback never receives a request, the breaker keeps the number of
  requests to the dead primary bounded; when the primary is back, ``dlq_replay`` resolves them
  and a second replay is a no-op."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fault_server import Faults, FaultServer, FaultServers, fault_servers

from flows.dlq_replay import dlq_replay
from flows.ingest import ingest
from genai_ingest.config import RemoteEmbedSettings, RemoteEndpoint, Settings
from genai_ingest.embed.local import LocalEmbedder
from genai_ingest.failures.policies import BreakerPolicy, Policies, RetryPolicy, TaskRetryPolicy
from genai_ingest.run.runtime import runtime_for
from tests.conftest import SAMPLES, fixture_file

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

MODEL = "all-MiniLM-L6-v2"
DOCS = (
    "LICENSES.md",
    "docling_csv-comma.csv",
    "docling_wiki.md",
    "docling_word_sample.docx",
    "unstructured_book-war-and-peace-1p.txt",
)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six text-heavy documents (quick to parse)."""
    folder = tmp_path_factory.mktemp("fault-run") / "docs"
    folder.mkdir()
    for name in DOCS:
        shutil.copyfile(SAMPLES / name, folder / name)
    shutil.copyfile(fixture_file("docling_duck.md"), folder / "x_duck.md")
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


@pytest.fixture(scope="module")
def local_run(
    docs: Path, tmp_path_factory: pytest.TempPathFactory, prefect_server: str
) -> Settings:
    """The reference: the same documents embedded by the in-process model, fp32 like the
    endpoints (an int8 index is another encoder: ``test_encoders.py``)."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("local") / "state",
        documents_per_batch=2,
        embed={"precision": "fp32", "window_pooling": "separate"},
    )
    report = ingest(sources=[str(docs)], settings=settings)
    assert report["documents_indexed"] == len(DOCS) + 1
    return settings


@pytest.fixture
def servers(local_embedder: LocalEmbedder) -> Iterator[FaultServers]:
    with fault_servers(local_embedder) as started:
        yield started


def endpoint(server: FaultServer, model: str = MODEL) -> RemoteEndpoint:
    """One text per request, so a run makes dozens of them; dimension configured, so a
    primary that is down at start-up needs no probe."""
    return RemoteEndpoint(url=server.url, model=model, dimension=384, timeout_s=5, max_batch=1)


def remote_settings(
    data_dir: Path,
    primary: FaultServer,
    fallbacks: tuple[RemoteEndpoint, ...] = (),
    *,
    breaker: BreakerPolicy,
    documents_per_batch: int = 2,
) -> Settings:
    return Settings(
        data_dir=data_dir,
        documents_per_batch=documents_per_batch,
        remote_embed=RemoteEmbedSettings(primary=endpoint(primary), fallbacks=list(fallbacks)),
        policies=Policies(
            embed_endpoint=RetryPolicy(
                attempts=8, initial_s=0.02, max_s=0.3, jitter_s=0.02, budget_s=20
            ),
            embed_breaker=breaker,
            task=TaskRetryPolicy(retries=2, backoff_factor_s=0.1, jitter_factor=0.5),
        ),
    )


def vectors_by_chunk(settings: Settings) -> dict[str, np.ndarray]:
    with sqlite3.connect(f"file:{settings.database_path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT chunk_id, vector FROM chunks").fetchall()
    dimension = 384  # all-MiniLM-L6-v2: the chunk's vector, then one row per sentence window
    return {cid: np.frombuffer(blob, np.float32).reshape(-1, dimension) for cid, blob in rows}


def assert_same_index(settings: Settings, reference: Settings) -> None:
    """Same chunk ids (digest), no duplicates, and vectors of the same space."""
    got, want = runtime_for(settings).store.stats(), runtime_for(reference).store.stats()
    assert (got.chunk_ids_sha256, got.chunks, got.documents) == (
        want.chunk_ids_sha256,
        want.chunks,
        want.documents,
    )
    assert (got.model_id, got.dimension) == (want.model_id, want.dimension)
    with sqlite3.connect(f"file:{settings.database_path}?mode=ro", uri=True) as conn:
        total, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT chunk_id) FROM chunks"
        ).fetchone()
    assert total == distinct, "duplicate chunk ids"
    mine, theirs = vectors_by_chunk(settings), vectors_by_chunk(reference)
    assert mine.keys() == theirs.keys()
    assert all(mine[k].shape == theirs[k].shape for k in mine)
    cosines = [float(row) for k in mine for row in np.sum(mine[k] * theirs[k], axis=1)]
    assert min(cosines) > 0.999, "the remote vectors are not the local model's"


def test_a_run_against_an_endpoint_failing_30_percent_indexes_everything(
    docs: Path, local_run: Settings, servers: FaultServers, tmp_path: Path
) -> None:
    faults = Faults(rate_limited=0.1, unavailable=0.1, dropped=0.1, retry_after="0.05", seed=7)
    server = servers.start(MODEL, faults)
    settings = remote_settings(
        tmp_path / "state", server, breaker=BreakerPolicy(failure_threshold=20, cooldown_s=0.5)
    )
    report = ingest(sources=[str(docs)], settings=settings)
    stats = runtime_for(settings).retry_stats.summary()
    print(f"server {dict(server.counts)}, retries {stats}")

    assert report["documents_indexed"] == len(DOCS) + 1 and report["dlq_new"] == 0
    assert_same_index(settings, local_run)
    faulted = sum(server.counts[k] for k in ("rate_limited", "unavailable", "dropped"))
    assert server.counts["requests"] >= 20 and 0.15 < faulted / server.counts["requests"] < 0.5
    assert min(server.counts[k] for k in ("rate_limited", "unavailable", "dropped")) > 0
    assert stats["retries"] > 0 and stats["retries"] >= faulted - stats["gave_up"] * 8
    assert stats["errors"]["rate_limited"] == server.counts["rate_limited"]
    assert stats["slept_s"] > 0


def test_primary_hard_down_is_replaced_by_a_fallback_of_the_same_model(
    docs: Path, local_run: Settings, servers: FaultServers, tmp_path: Path
) -> None:
    primary = servers.start(MODEL)
    primary.stop()  # connection refused from now on
    fallback = servers.start(MODEL)
    settings = remote_settings(
        tmp_path / "state",
        primary,
        (endpoint(fallback),),
        breaker=BreakerPolicy(failure_threshold=3, cooldown_s=60),
    )
    report = ingest(sources=[str(docs)], settings=settings)

    assert report["documents_indexed"] == len(DOCS) + 1 and report["dlq_new"] == 0
    assert fallback.counts["ok"] > 0
    assert runtime_for(settings).embedder.usage["primary"] == 0  # type: ignore[attr-defined]
    assert_same_index(settings, local_run)


def test_a_fallback_of_another_model_is_never_used_and_replay_resolves_later(
    docs: Path, local_run: Settings, servers: FaultServers, tmp_path: Path
) -> None:
    primary = servers.start(MODEL, Faults(outage=True))  # answers 503 to everything
    other = servers.start("other-embedder")
    threshold, cooldown, attempts, task_tries = 3, 3.0, 8, 3
    batches = len(DOCS) + 1
    settings = remote_settings(
        tmp_path / "state",
        primary,
        (endpoint(other, "other-embedder"),),
        breaker=BreakerPolicy(failure_threshold=threshold, cooldown_s=cooldown),
        documents_per_batch=1,
    )
    started = time.monotonic()
    report = ingest(sources=[str(docs)], settings=settings)
    elapsed = time.monotonic() - started
    rt = runtime_for(settings)

    assert report["documents_indexed"] == 0 and report["dlq_new"] == batches
    entries = rt.dlq.entries()
    assert len(entries) == batches and {e.error_kind for e in entries} == {"transient"}
    assert {e.stage for e in entries} == {"embed"}
    assert other.counts["requests"] == 0, "a fallback of another model received a request"
    bound = threshold + int(elapsed / cooldown) + 1  # opening, then one probe per cool-down
    print(f"dead primary got {primary.counts['requests']} requests in {elapsed:.1f}s")
    assert primary.counts["requests"] <= bound < batches * attempts * task_tries, (
        "the breaker did not bound the requests to a dead endpoint"
    )
    assert rt.store.stats().chunks == 0

    primary.faults.outage = False  # the primary is back
    time.sleep(cooldown + 0.2)  # its breaker lets a probe through
    replayed = dlq_replay(settings=settings)
    assert replayed["replayed"] == batches and len(replayed["resolved"]) == batches
    assert rt.dlq.entries() == []
    assert all(e.status.value == "resolved" for e in rt.dlq.entries(status=None))
    assert_same_index(settings, local_run)
    assert other.counts["requests"] == 0

    digest = rt.store.stats().chunk_ids_sha256
    requests = primary.counts["requests"]
    again = dlq_replay(settings=settings)
    assert again["replayed"] == 0 and again["resolved"] == []
    assert rt.store.stats().chunk_ids_sha256 == digest
    assert primary.counts["requests"] == requests, "a no-op replay called the endpoint"
