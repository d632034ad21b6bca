"""Sharded ingestion: shard plans cover every document exactly once; on a real Prefect server
with two real process workers, a sharded run through the ``ingest-shard-local`` deployment
leaves the same index as a single-process run, a shard whose run crashes is retried, and a
shard that crashes on every attempt has its documents dead-lettered, not dropped."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment

from flows.shard import ShardSpec, plan_shards
from genai_ingest.config import SourceSettings
from genai_ingest.models import SourceRef
from genai_ingest.sources.discovery import discover
from genai_ingest.stores.sqlite import SQLiteVectorStore
from tests.conftest import REPO, SAMPLES
from tests.crashing_shard import COUNTER, crashing_shard
from tests.processes import BIN, prefect_cli, stop

RUN_TIMEOUT_S = 480
POOL = "genai-ingest-process"


def _refs(names: list[str]) -> list[SourceRef]:
    return [SourceRef(uri=f"file:///corpus/{name}", name=name.rsplit("/", 1)[-1]) for name in names]


CORPUS_NAMES = [
    f"{folder}/doc-{i:02d}.pdf" for folder in "abcdefg" for i in range(3 + ord(folder) % 5)
]


@pytest.mark.parametrize("by", ["hash", "range", "prefix"])
@pytest.mark.parametrize("count", [1, 2, 3, 5, 40])
def test_every_document_falls_in_exactly_one_shard(by: str, count: int) -> None:
    refs = _refs(CORPUS_NAMES)
    specs = plan_shards(refs, count, by)
    assert 1 <= len(specs) <= count
    for ref in refs:
        assert sum(spec.contains(ref) for spec in specs) == 1, ref.uri
    # a spec survives the trip through flow-run parameters unchanged
    assert [ShardSpec(**json.loads(s.model_dump_json())) for s in specs] == specs


def test_range_shards_are_even_and_prefix_shards_never_split_a_folder() -> None:
    refs = _refs(CORPUS_NAMES)
    sizes = [sum(s.contains(r) for r in refs) for s in plan_shards(refs, 4, "range")]
    assert max(sizes) - min(sizes) <= 1
    for spec in plan_shards(refs, 3, "prefix"):
        folders = {r.uri.rsplit("/", 1)[0] for r in refs if spec.contains(r)}
        for folder in folders:
            assert all(spec.contains(r) for r in refs if r.uri.rsplit("/", 1)[0] == folder)


def test_hash_shards_are_balanced() -> None:
    refs = _refs([f"f{i // 50}/doc-{i}.txt" for i in range(2000)])
    sizes = [sum(s.contains(r) for r in refs) for s in plan_shards(refs, 4, "hash")]
    assert min(sizes) > 0.8 * 500 and max(sizes) < 1.2 * 500


# --- on a real server with two process workers ----------------------------------------------


@pytest.fixture(scope="module")
def env(prefect_server: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "GENAI_INGEST_CHECKOUT": str(REPO),
        "GENAI_INGEST_GIT_URL": "https://git.example.com/genai-ingest.git",
        "GENAI_INGEST_GIT_BRANCH": "main",
        "GENAI_INGEST_IMAGE": "registry.example.com/genai-ingest:test",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def workers(env: dict[str, str]) -> Iterator[None]:
    """The local deployments, and two process workers on the pool."""
    prefect_cli(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect_cli(env, "deploy", "--name", "ingest-manual-local", "--name", "ingest-shard-local")
    crashing_shard.from_source(
        source=str(REPO), entrypoint="tests/crashing_shard.py:crashing_shard"
    ).deploy(
        name="crash-local", work_pool_name=POOL, build=False, push=False, print_next_steps=False
    )
    procs = [
        subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--limit", "2"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    yield
    stop(*procs)


@pytest.fixture(scope="module")
def single_run(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """samples/ ingested by one ``genai-ingest run`` process: report and stats."""
    data_dir = tmp_path_factory.mktemp("single")
    report = _cli(env, "run", str(SAMPLES), "--json", "--data-dir", str(data_dir))
    return {"report": report, "stats": _cli(env, "stats", "--json", "--data-dir", str(data_dir))}


def _cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "genai-ingest"), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _sharded(folder: Path, data_dir: Path, deployment: str, **shard: Any) -> tuple[Any, dict]:
    """Run the manual ingest with sharding through ``deployment``; returns the parent run and
    its ``ingest-shards`` table."""
    run = run_deployment(
        "ingest/ingest-manual-local",
        parameters={
            "sources": [str(folder)],
            "settings": {
                "data_dir": str(data_dir),
                "shard": {"deployment": deployment, "count": 2, **shard},
                "policies": {"claims": {"lease_s": 10, "poll_s": 1}},
            },
        },
        timeout=RUN_TIMEOUT_S,
        as_subflow=False,
    )
    assert run.state is not None and run.state.is_completed(), run.state
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    shards = next(a for a in artifacts if a.key == "ingest-shards")
    table = shards.data if isinstance(shards.data, list) else json.loads(shards.data)
    summary = next(a for a in artifacts if a.key == "ingest-summary")
    return run, {"shards": table, "summary": str(summary.data)}


@pytest.mark.slow
def test_sharded_run_equals_single_process_run(
    workers: None, env: dict[str, str], single_run: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "state"
    _, out = _sharded(SAMPLES, data_dir, "ingest-shard/ingest-shard-local")
    stats = _cli(env, "stats", "--json", "--data-dir", str(data_dir))
    assert stats["chunk_ids_sha256"] == single_run["stats"]["chunk_ids_sha256"]
    assert stats["documents"] == single_run["stats"]["documents"]
    assert [row["state"] for row in out["shards"]] == ["completed", "completed"]
    indexed = single_run["report"]["documents_indexed"]
    assert f"| documents_indexed | {indexed} |" in out["summary"]


@pytest.mark.slow
def test_a_crashed_shard_is_retried(
    workers: None, env: dict[str, str], single_run: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "state"
    data_dir.mkdir()
    (data_dir / COUNTER).write_text("1")
    _, out = _sharded(SAMPLES, data_dir, "ingest-shard/crash-local", by="range")
    stats = _cli(env, "stats", "--json", "--data-dir", str(data_dir))
    assert stats["chunk_ids_sha256"] == single_run["stats"]["chunk_ids_sha256"]
    rows = {row["shard"]: row for row in out["shards"]}
    assert rows[0]["attempts"] == 2 and rows[0]["state"] == "completed"
    assert rows[1]["attempts"] == 1 and rows[1]["state"] == "completed"


@pytest.mark.slow
def test_a_shard_that_always_crashes_has_its_documents_dead_lettered(
    workers: None, env: dict[str, str], single_run: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "state"
    data_dir.mkdir()
    (data_dir / COUNTER).write_text("99")
    _, out = _sharded(SAMPLES, data_dir, "ingest-shard/crash-local", by="range")
    rows = {row["shard"]: row for row in out["shards"]}
    assert rows[0]["state"].startswith("failed") and rows[0]["attempts"] == 2
    assert rows[1]["state"] == "completed"
    dlq = _cli(env, "dlq", "list", "--json", "--data-dir", str(data_dir))
    lost = {e["source"] for e in dlq if e["error_class"] == "shard_failed"}
    refs = discover([str(SAMPLES)], SourceSettings())
    first, second = plan_shards(refs, 2, "range")
    assert lost == {r.uri for r in refs if first.contains(r)}, "reported, never dropped"
    assert {e["error_kind"] for e in dlq if e["source"] in lost} == {"transient"}  # replayable
    ledger = SQLiteVectorStore(data_dir / "genai-ingest.db")
    assert all(ledger.get_document(r.doc_id) is not None for r in refs if second.contains(r))
