"""``genai-ingest reindex`` on the real stores (embedded SQLite; the live Elasticsearch node
when ``ELASTICSEARCH_URL`` is set), the real model and the real CLI: an index built with the
fp32 encoder is rebuilt for the int8 encoder from its stored chunks (nothing parsed) while a
thread keeps searching the live generation; the rebuild is SIGKILLed midway and resumed; a gate
below the threshold refuses the swap; the swap, a rollback to fp32, the swap again and dropping
the previous generation; then the flow from Prefect."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genai_ingest.config import Settings
from genai_ingest.embed.encoders import EncoderSpec
from genai_ingest.failures.errors import ModelMismatch
from genai_ingest.models import Chunk, EmbeddedChunk
from genai_ingest.run.runtime import Runtime
from genai_ingest.stores import open_store
from genai_ingest.stores.base import chunk_fields, citation_fields
from tests.es_live import (
    CLI,
    ES_URL,
    SKIP_REASON,
    cli_env,
    copy_docs,
    drop_alias,
    es_client,
    es_settings,
)
from tests.test_store_contract import DIM, basis, make_chunk

STORES = [
    pytest.param("sqlite", id="embedded"),
    pytest.param(
        "es",
        id="elasticsearch",
        marks=[pytest.mark.elasticsearch, pytest.mark.skipif(not ES_URL, reason=SKIP_REASON)],
    ),
]
FP32 = {"GENAI_INGEST_EMBED__PRECISION": "fp32"}
FP32_ID = EncoderSpec.of(Settings(embed={"precision": "fp32"})).id  # the run with FP32
INT8_ID = EncoderSpec.of(Settings()).id  # the default: what reindex builds for
QUESTIONS = [
    ("Where is Big Blue headquartered?", "a_wiki.md", "headquartered in Armonk, New York"),
    ("Who greets Prince Vasili at her reception?", "b_war_and_peace.txt",
     "Anna Pavlovna Scherer"),
    ("What is the boiling point of mercury?", "a_wiki.md", "356.7 °C"),  # not in there
]  # fmt: skip


def write_qa(path: Path) -> Path:
    rows = [dict(zip(("question", "source", "answer"), row, strict=True)) for row in QUESTIONS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


class Setup:
    """One store (embedded, or a fresh alias on the live node) and how to reach it."""

    def __init__(self, kind: str, root: Path, prefect_api: str) -> None:
        self.kind = kind
        self.alias = f"gi-reindex-{uuid.uuid4().hex[:8]}" if kind == "es" else None
        self.url = ES_URL if kind == "es" else None
        self.data_dir = root / "state"
        self.env = cli_env(prefect_api, self.url, self.alias, self.data_dir)
        self.env["GENAI_INGEST_REINDEX_PAGE_CHUNKS"] = "4"  # many steps: a kill lands midway

    def settings(self, **embed: str) -> Settings:
        values: dict[str, Any] = {"data_dir": self.data_dir, "embed": embed}
        if self.url:
            values |= {"store_url": self.url, "elasticsearch": {"index": self.alias}}
        return Settings(**values)

    def cli(self, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, **(extra or {})}
        return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=600)

    def ok(self, *args: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
        done = self.cli(*args, "--json", extra=extra)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    def pending_chunks(self) -> int:
        """Chunks written so far to generation 2 (read beside the writer)."""
        if self.kind == "sqlite":
            path = self.data_dir / "genai-ingest.v2.db"
            if not path.exists():
                return 0
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                    return conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            except sqlite3.OperationalError:
                return 0
        client = es_client(self.url or "")
        try:
            pattern = f"{self.alias}-v2-*,-{self.alias}-v2-*-ledger"
            client.indices.refresh(index=pattern, allow_no_indices=True)
            return int(client.count(index=pattern, allow_no_indices=True)["count"])
        finally:
            client.close()


@pytest.fixture(params=STORES)
def setup(request: pytest.FixtureRequest, prefect_server: str, tmp_path: Path) -> Iterator[Setup]:
    state = Setup(request.param, tmp_path, prefect_server)
    yield state
    if state.alias:
        drop_alias(state.url or "", state.alias)


def stored_ids(settings: Settings) -> list[str]:
    store = open_store(settings)
    try:
        return [chunk.chunk_id for chunk in store.iter_stored_chunks()]
    finally:
        store.close()


def pending_ids(settings: Settings, model_id: str, dimension: int) -> list[str]:
    store = open_store(settings)
    try:
        store.begin_reindex(model_id, dimension)  # resumes the pending generation
        return [chunk.chunk_id for chunk in store.iter_stored_chunks()]
    finally:
        store.close()


class Searcher(threading.Thread):
    """Searches the live generation with the fp32 encoder's query vector, a new store each
    time (as separate search requests would), until stopped."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.vector = Runtime(settings).query_embedder.embed(["Armonk, New York"])[0]
        self.answered = 0
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                store = open_store(self.settings)
                try:
                    assert store.index_identity()[0] == FP32_ID
                    hits = store.search(self.vector, k=3)
                finally:
                    store.close()
                assert hits and "Armonk" in " ".join(h.text for h in hits)
                self.answered += 1
            except BaseException as exc:  # any failure is what the test reports
                self.errors.append(exc)
                return
            time.sleep(0.05)


def kill_midway(setup: Setup, total: int) -> int:
    """Start ``reindex``, SIGKILL it once generation 2 holds some but not all chunks; returns
    how many it held."""
    proc = subprocess.Popen(
        [CLI, "reindex", "--json"],
        env=setup.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    written = 0
    while proc.poll() is None and time.monotonic() < deadline:
        written = setup.pending_chunks()
        if written:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, f"not killed midway: {proc.stderr.read()!r}"
    assert 0 < written < total, f"killed after {written} of {total} chunks"
    return written


@pytest.mark.slow
def test_reindex_to_another_encoder_from_stored_chunks_with_gate_swap_and_rollback(
    setup: Setup, tmp_path: Path
) -> None:
    docs = copy_docs(tmp_path / "docs")
    qa = write_qa(tmp_path / "qa.jsonl")
    first = setup.ok("run", str(docs), extra=FP32)
    assert first["documents_failed"] == 0
    fp32, int8 = setup.settings(precision="fp32"), setup.settings()
    old_ids = stored_ids(fp32)
    live_before = open_store(fp32).live_index()

    searcher = Searcher(fp32)
    searcher.start()
    kill_midway(setup, len(old_ids))
    resumed = setup.ok("reindex")
    searcher.stop.set()
    searcher.join(30)
    assert not searcher.errors, searcher.errors[0]
    assert searcher.answered > 0

    assert resumed["documents_parsed"] == 0 and resumed["swapped"] is False
    assert resumed["model_id"] == INT8_ID and resumed["chunks_read"] == len(old_ids)
    assert 0 < resumed["chunks_embedded"] < len(old_ids), "vectors before the kill: cached"
    assert resumed["documents_copied"] == first["documents_seen"]
    assert resumed["documents_stale"] == 0
    assert pending_ids(int8, INT8_ID, 384) == old_ids
    assert open_store(fp32).live_index() == live_before  # the alias never moved

    refused = setup.cli("reindex", "--swap", "--qa", str(qa), "--min-passage-at-k", "1", "--json")
    assert refused.returncode == 4, refused.stderr
    assert "swap refused" in refused.stderr
    gate = json.loads(refused.stdout)
    assert gate["swapped"] is False and gate["live"] == live_before
    assert gate["gate"]["live"]["questions"] == gate["gate"]["new"]["questions"] == 3
    assert gate["gate"]["new"]["passage_at_k"] < 1
    assert open_store(fp32).index_identity()[0] == FP32_ID

    swapped = setup.ok("reindex", "--swap", "--qa", str(qa), "--min-passage-at-k", "0.3")
    assert swapped["swapped"] is True and swapped["documents_parsed"] == 0
    assert swapped["previous"] == live_before and swapped["live"] == swapped["generation"]
    assert swapped["chunks_embedded"] == 0  # everything came from the cache
    assert swapped["gate"]["new"]["passage_at_k"] >= 0.3
    assert stored_ids(int8) == old_ids
    hits = setup.ok("search", "Where is Big Blue headquartered?")
    assert "Armonk" in hits[0]["text"]
    wrong = setup.cli("search", "Armonk", extra=FP32)
    assert wrong.returncode == 2 and "genai-ingest reindex" in wrong.stderr

    again = setup.ok("run", str(docs))  # the new generation's ledger: nothing to parse again
    assert again["documents_unchanged"] == first["documents_seen"]
    assert again["embeddings_computed"] == 0

    rolled = setup.ok("reindex", "--rollback")
    assert rolled["rolled_back"] is True and rolled["live"] == live_before
    assert rolled["model_id"] == FP32_ID
    assert "Armonk" in setup.ok("search", "Big Blue headquarters", extra=FP32)[0]["text"]
    assert setup.cli("search", "Armonk").returncode == 2  # the int8 encoder: refused now

    back = setup.ok("reindex", "--swap", "--qa", str(qa), "--min-passage-at-k", "0.3")
    assert back["swapped"] is True and back["generation"] == swapped["generation"]
    dropped = setup.ok("reindex", "--drop-previous")
    assert dropped["dropped"] == [live_before]
    no_previous = setup.cli("reindex", "--rollback")
    assert no_previous.returncode == 2 and "no previous generation" in no_previous.stderr
    assert stored_ids(int8) == old_ids
    assert setup.ok("stats")["documents"] == first["documents_indexed"]


# --- the stores' generation operations (no model) ---------------------------------------------


@pytest.fixture(params=STORES)
def bare(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings of an empty store: embedded, or a fresh alias on the live node."""
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path / "state")
        return
    alias = f"gi-generations-{uuid.uuid4().hex[:8]}"
    yield es_settings(ES_URL or "", alias, tmp_path / "state")
    drop_alias(ES_URL or "", alias)


def test_generations_build_swap_roll_back_and_drop_on_the_store(bare: Settings) -> None:
    chunks = [make_chunk(f"doc-{i}", i, basis(i), band_keys=(f"b{i}",)) for i in range(3)]
    first = open_store(bare)
    first.ensure_index("enc-a", DIM)
    first.upsert_chunks(chunks)
    live = first.live_index()
    read_back = sorted(first.iter_stored_chunks(), key=lambda c: c.index)
    assert [stored_fields(c) for c in read_back] == [stored_fields(c.chunk) for c in chunks]

    building = open_store(bare)
    generation = building.begin_reindex("enc-b", DIM)
    assert generation != live
    building.upsert_chunks([EmbeddedChunk(c, basis(c.index + 3)) for c in read_back])
    writer = open_store(bare)
    writer.ensure_index("enc-b", DIM)  # a run with the new encoder finds the pending one
    assert writer.write_index == generation
    assert open_store(bare).index_identity() == ("enc-a", DIM)  # searches: still the old

    assert building.swap_alias() == generation
    assert open_store(bare).index_identity() == ("enc-b", DIM)
    assert open_store(bare).search(basis(3), k=1)[0].chunk_id == chunks[0].chunk.chunk_id

    assert open_store(bare).rollback() == live
    assert open_store(bare).index_identity() == ("enc-a", DIM)
    assert open_store(bare).search(basis(0), k=1)[0].chunk_id == chunks[0].chunk.chunk_id
    with pytest.raises(ModelMismatch, match="no previous generation"):
        open_store(bare).rollback()

    again = open_store(bare)
    assert again.begin_reindex("enc-b", DIM) == generation  # pending again after the rollback
    again.swap_alias()
    assert open_store(bare).drop_previous() == [live]
    assert open_store(bare).drop_previous() == []
    assert open_store(bare).stats().chunks == 3
    with pytest.raises(ModelMismatch, match="no previous generation"):
        open_store(bare).rollback()


def stored_fields(chunk: Chunk) -> dict[str, Any]:
    item = EmbeddedChunk(chunk, basis(0))
    return {**chunk_fields(item), **citation_fields(chunk.metadata), "signature": chunk.signature}


def test_reindex_refuses_clearly(prefect_server: str, tmp_path: Path) -> None:
    env = cli_env(prefect_server, None, None, tmp_path / "state")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, "reindex", *args], env=env, capture_output=True, text=True)

    empty = cli("--json")
    assert empty.returncode == 2 and "nothing to reindex" in empty.stderr
    ungated = cli("--swap")
    assert ungated.returncode == 2 and "--swap needs --qa FILE" in ungated.stderr
    both = cli("--rollback", "--drop-previous")
    assert both.returncode == 2 and "at most one of" in both.stderr
    assert "no previous generation" in cli("--rollback").stderr


@pytest.mark.slow
def test_reindex_flow_refuses_then_swaps_with_its_report_as_an_artifact(
    prefect_server: str, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.reindex import reindex

    setup = Setup("sqlite", tmp_path, prefect_server)
    setup.ok("run", str(copy_docs(tmp_path / "docs")), extra=FP32)
    qa = write_qa(tmp_path / "qa.jsonl")
    refused = reindex(
        action="swap", qa_file=str(qa), min_passage_at_k=1.0, settings=setup.settings(),
        return_state=True,
    )  # fmt: skip
    assert refused.is_failed()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[refused.state_details.flow_run_id])
            )
        )
    [artifact] = [a for a in artifacts if a.key == "reindex-report"]
    assert "below --min-passage-at-k 1.0" in str(artifact.data)
    report = reindex(
        action="swap", qa_file=str(qa), min_passage_at_k=0.3, settings=setup.settings()
    )
    assert report["swapped"] is True and report["documents_parsed"] == 0
    assert report["chunks_embedded"] == 0  # the refused run built it: vectors from the cache
    assert open_store(setup.settings()).index_identity()[0] == INT8_ID
