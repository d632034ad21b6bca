"""The pipeline on a live Elasticsearch node, through the CLI as a user runs it: ingest, an
unchanged re-run, an edit, ``--delete-missing``, search; the same documents give the same
``chunk_ids_sha256`` as the embedded store. Then a ``kill -9`` of a run in the middle of its
writes, and a re-run that converges to the clean run's index (no orphan, no stale chunk)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from flows.ingest import ingest
from tests.es_live import (
    CLI,
    SMALL_DOCS,
    cli,
    cli_env,
    copy_docs,
    embedded_digest,
    es_client,
    es_settings,
    require_es,
)

pytestmark = [pytest.mark.elasticsearch, pytest.mark.slow]


def test_ingest_rerun_edit_delete_missing_match_the_embedded_store(
    alias: str, tmp_path: Path, prefect_server: str
) -> None:
    url = require_es()
    docs = copy_docs(tmp_path / "docs")
    env = cli_env(prefect_server, None, None, tmp_path / "state")
    env["GENAI_INGEST_ELASTICSEARCH__INDEX"] = alias
    store = ["--store", url]
    settings = es_settings(url, alias, tmp_path / "state")

    first = cli(env, "run", str(docs), *store)
    assert first["documents_indexed"] == len(SMALL_DOCS) and first["chunks_written"] > 0
    again = ingest(sources=[str(docs)], settings=settings)
    assert again["documents_unchanged"] == len(SMALL_DOCS)
    assert (again["embeddings_computed"], again["chunks_written"], again["chunks_deleted"]) == (
        0,
        0,
        0,
    )

    edited = docs / "b_war_and_peace.txt"
    edited.write_text(edited.read_text() + "\n\nA closing line added by the test.\n")
    after_edit = ingest(sources=[str(docs)], settings=settings)
    assert (after_edit["documents_indexed"], after_edit["documents_unchanged"]) == (
        1,
        len(SMALL_DOCS) - 1,
    )
    assert 0 < after_edit["embeddings_computed"] < first["embeddings_computed"]

    (docs / "c_table.csv").unlink()
    pruned = ingest(sources=[str(docs)], settings=settings, delete_missing=True)
    assert pruned["documents_deleted"] == 1 and pruned["chunks_deleted"] > 0

    es_stats = cli(env, "stats", *store)
    hits = cli(env, "search", "Tolstoy war and peace", "--k", "3", *store)
    assert hits and any("war_and_peace" in h["source"] for h in hits)
    assert es_stats["documents"] == len(SMALL_DOCS) - 1
    assert es_stats["chunk_ids_sha256"] == embedded_digest(docs, tmp_path / "embedded")


def chunk_count(client: Elasticsearch, alias: str) -> int:
    try:
        return int(client.count(index=alias)["count"])
    except Exception:  # the alias does not exist yet
        return 0


def test_kill_9_mid_write_then_rerun_equals_a_clean_run(
    alias: str, tmp_path: Path, prefect_server: str
) -> None:
    url = require_es()
    docs = copy_docs(tmp_path / "docs")
    env = cli_env(prefect_server, url, alias, tmp_path / "state")
    env.update(GENAI_INGEST_DOCUMENTS_PER_BATCH="1", GENAI_INGEST_POLICIES__CLAIMS__LEASE_S="2")
    client = es_client(url)
    run = subprocess.Popen(
        [CLI, "run", str(docs), "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while chunk_count(client, alias) == 0 and run.poll() is None:
            assert time.monotonic() < deadline, "no chunk written within 300 s"
            time.sleep(0.05)
        killed_mid_run = run.poll() is None
        os.killpg(run.pid, signal.SIGKILL)
    finally:
        run.wait(timeout=30)
    assert killed_mid_run, "the run finished before the first chunks showed up"
    time.sleep(2.5)  # the killed run's document claims expire

    resumed = ingest(sources=[str(docs)], settings=es_settings(url, alias, tmp_path / "state"))
    assert resumed["documents_failed"] == 0
    stats = cli(env, "stats")
    assert stats["chunk_ids_sha256"] == embedded_digest(docs, tmp_path / "embedded")
    assert stats["documents"] == len(SMALL_DOCS)
    client.indices.refresh(index=alias)
    ledger = client.search(index=f"{alias}-ledger", size=100, source=["record.chunk_ids"])
    listed = {c for h in ledger["hits"]["hits"] for c in h["_source"]["record"]["chunk_ids"]}
    stored = {
        h["_id"] for h in client.search(index=alias, size=10_000, source=False)["hits"]["hits"]
    }
    assert stored == listed, "orphan or stale chunks after the re-run"
    client.close()
