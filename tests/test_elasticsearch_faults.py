"""Faults of a real node, on a second short-lived node started by ``es.sh`` (port 9251, one
write thread, a write queue of 1, 512 MB heap):

* real ``429`` back-pressure: other clients flood the node's write pool while a run writes;
  the run's rejected writes are retried (counted in the run report), nothing is lost or
  duplicated: the index equals a clean run's;
* the node stopped for ~20 s in the middle of a run, then started again: with the default
  policies the run pauses while the store breaker is open and finishes with nothing failed;
  with a pause bound shorter than the outage, the documents are dead-lettered as transient and
  the run replays them itself once the node is back. Both indexes equal a clean run's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import helpers

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
from tests.es_live import (
    Node,
    copy_docs,
    embedded_digest,
    es_client,
    es_settings,
    require_es,
    second_node,
    unique_alias,
)

pytestmark = [pytest.mark.elasticsearch, pytest.mark.slow]

PORT = 9251
TINY_WRITE_POOL = "thread_pool.write.size=1 thread_pool.write.queue_size=1"
OUTAGE_S = 20


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    require_es()  # runs where the live suite runs
    with second_node(PORT, TINY_WRITE_POOL) as started:
        yield started


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_docs(tmp_path_factory.mktemp("es-faults") / "docs")


@pytest.fixture(scope="module")
def clean_digest(docs: Path, tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> str:
    return embedded_digest(docs, tmp_path_factory.mktemp("es-faults-clean") / "state")


def with_policies(settings: Settings, **policies: object) -> Settings:
    return settings.model_copy(update={"policies": Policies(**policies), "documents_per_batch": 1})


def flood(url: str, stop: threading.Event, deadline_s: float) -> None:
    """Bulk writes as fast as the node takes them, until ``stop`` or the deadline."""
    client = es_client(url, request_timeout=30)
    docs = [{"_index": "flood", "_source": {"n": i, "text": "x" * 200}} for i in range(500)]
    end = time.monotonic() + deadline_s
    while not stop.is_set() and time.monotonic() < end:
        helpers.bulk(client, docs, raise_on_error=False, max_retries=0)
    client.close()


def write_rejections(url: str) -> int:
    client = es_client(url)
    stats = client.nodes.stats(metric="thread_pool")
    client.close()
    return sum(n["thread_pool"]["write"]["rejected"] for n in stats["nodes"].values())


def test_real_429s_are_retried_and_nothing_is_lost_or_duplicated(
    node: Node, docs: Path, clean_digest: str, tmp_path: Path
) -> None:
    alias = unique_alias()
    settings = with_policies(
        es_settings(node.url, alias, tmp_path / "state"),
        store_write=RetryPolicy(attempts=30, initial_s=0.05, max_s=0.5, jitter_s=0.1, budget_s=60),
        store_breaker=BreakerPolicy(failure_threshold=1000, cooldown_s=1),
    )
    rejected_before = write_rejections(node.url)
    stop = threading.Event()
    flooders = [threading.Thread(target=flood, args=(node.url, stop, 240)) for _ in range(4)]
    for thread in flooders:
        thread.start()
    try:
        report = ingest(sources=[str(docs)], settings=settings)
    finally:
        stop.set()
        for thread in flooders:
            thread.join(timeout=60)
    print(f"run retries {report['retries']}")
    assert write_rejections(node.url) > rejected_before
    assert report["retries"]["retries"] > 0
    assert report["retries"]["errors"].get("store_unavailable", 0) > 0
    assert report["documents_failed"] == 0 and report["dlq_new"] == 0
    stats = runtime_for(settings).store.stats()
    assert stats.chunk_ids_sha256 == clean_digest
    assert stats.chunks == report["chunks_written"], "a chunk was duplicated or lost"


def run_through_an_outage(node: Node, docs: Path, settings: Settings, outage_s: float) -> dict:
    """Ingest ``docs`` in a thread; once the first chunks are in, stop the node for
    ``outage_s`` and start it again. The run's report (it must not crash)."""
    client = es_client(node.url)
    alias = settings.elasticsearch.index
    outcome: dict = {}

    def run_ingest() -> None:
        try:
            outcome.update(ingest(sources=[str(docs)], settings=settings))
        except BaseException as exc:  # reported below: the run must not crash
            outcome["crashed"] = exc

    run = threading.Thread(target=run_ingest)
    started = time.monotonic()
    run.start()
    deadline = time.monotonic() + 300
    while run.is_alive():
        assert time.monotonic() < deadline
        if client.indices.exists_alias(name=alias) and client.count(index=alias)["count"] > 0:
            break
        time.sleep(0.05)
    client.close()
    assert run.is_alive(), "the run ended before the outage could start"
    node.es("stop")
    time.sleep(outage_s)
    node.es("start")
    run.join(timeout=600)
    assert "crashed" not in outcome, f"the run crashed: {outcome.get('crashed')!r}"
    outcome["wall_s"] = time.monotonic() - started
    return outcome


def test_node_down_for_20_s_the_run_pauses_and_finishes_clean(
    node: Node, docs: Path, clean_digest: str, tmp_path: Path
) -> None:
    """Default policies: the store breaker opens, the work that needs the store pauses
    (``store_breaker.pause_s``, 120 s), probing every cool-down, and goes on once the node
    answers: nothing failed, nothing dead-lettered, the index equals a clean run's."""
    settings = es_settings(node.url, unique_alias(), tmp_path / "state", request_timeout_s=5)
    settings = settings.model_copy(update={"documents_per_batch": 1})
    report = run_through_an_outage(node, docs, settings, OUTAGE_S)
    print(f"wall {report['wall_s']:.1f}s, retries {report['retries']}")
    assert report["retries"]["pauses"] > 0 and report["retries"]["paused_s"] >= OUTAGE_S / 2
    assert report["documents_failed"] == 0 and report["dlq_new"] == 0
    rt = runtime_for(settings)
    assert rt.dlq.entries() == [] and report["dlq_open"] == 0
    assert rt.store.stats().chunk_ids_sha256 == clean_digest


def test_an_outage_longer_than_the_pause_is_replayed_after_the_run(
    node: Node, docs: Path, clean_digest: str, tmp_path: Path
) -> None:
    """A pause bound (2 s) shorter than the outage: documents are dead-lettered as transient
    (spooled: the DLQ is on the node too), and the run replays them itself once the node is
    back (``delayed_replay``): the entries are resolved with their history, the index equals
    a clean run's, and nobody ran a command."""
    settings = with_policies(
        es_settings(node.url, unique_alias(), tmp_path / "state", request_timeout_s=5),
        store_breaker=BreakerPolicy(failure_threshold=3, cooldown_s=2, pause_s=2),
        task=TaskRetryPolicy(retries=0),
        delayed_replay=DelayedReplayPolicy(wait_s=240),
    )
    report = run_through_an_outage(node, docs, settings, OUTAGE_S)
    print(
        f"wall {report['wall_s']:.1f}s, failures {report['failures']}, retries {report['retries']}"
    )
    failed = {f["doc_id"] for f in report["failures"]}
    assert failed and {f["error_kind"] for f in report["failures"]} == {"transient"}
    assert {f["error_class"] for f in report["failures"]} <= {"store_unavailable", "circuit_open"}
    assert report["replayed_after_run"] == {
        "replayed": len(failed),
        "resolved": len(failed),
        "left_open": 0,
    }
    assert report["dlq_open"] == 0
    rt = runtime_for(settings)
    assert rt.store.stats().chunk_ids_sha256 == clean_digest
    entries = rt.dlq.entries(status=None)
    assert {e.doc_id for e in entries} == failed
    for entry in entries:  # the failure and its resolution, both kept
        assert entry.status.value == "resolved" and entry.error_kind == "transient"
        assert entry.history[0]["error_class"] in {"store_unavailable", "circuit_open"}
        assert entry.history[-1]["status"] == "resolved"
