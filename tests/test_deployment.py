"""Deployment end to end on a real Prefect server: register the blocks, create the work pools
from the repo's templates, deploy everything in prefect.yaml, and run the manual ingest through
a real process worker; then the GPU fan-out with ``embed-local`` standing in for the GPU pool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from blocks import IngestSettingsBlock
from tests.conftest import REPO, SAMPLES, cli_stats
from tests.processes import prefect_cli, stop

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DOCS = ("docling_wiki.md", "docling_csv-comma.csv", "unstructured_book-war-and-peace-1p.txt")
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def env(prefect_server: str) -> dict[str, str]:
    """Environment of the prefect CLI and worker subprocesses."""
    return {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_UI_API_URL": prefect_server,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "GENAI_INGEST_CHECKOUT": str(REPO),
        "GENAI_INGEST_GIT_URL": "https://git.example.com/genai-ingest.git",
        "GENAI_INGEST_GIT_BRANCH": "main",
        "GENAI_INGEST_IMAGE": "registry.example.com/genai-ingest-gpu:test",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def deployed(env: dict[str, str]) -> Iterator[None]:
    """Blocks registered, the pools created, every deployment applied, a worker running."""
    prefect_cli(env, "block", "register", "-m", "blocks")
    prefect_cli(
        env,
        "work-pool",
        "create",
        "genai-ingest-gpu",
        "--type",
        "kubernetes",
        "--base-job-template",
        "deploy/k8s-gpu-pool.json",
        "--overwrite",
    )
    prefect_cli(
        env,
        "work-pool",
        "create",
        "genai-ingest-cpu",
        "--type",
        "kubernetes",
        "--base-job-template",
        "deploy/k8s-cpu-pool.json",
        "--overwrite",
    )
    pool = ["genai-ingest-process", "--type", "process", "--overwrite"]
    prefect_cli(env, "work-pool", "create", *pool)
    prefect_cli(env, "deploy", "--all")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "genai-ingest-process", "--limit", "4"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield
    stop(worker)


def _run(name: str, parameters: dict[str, Any]) -> FlowRun:
    run = run_deployment(name, parameters=parameters, timeout=RUN_TIMEOUT_S, as_subflow=False)
    assert run.state is not None and run.state.is_completed(), run.state
    return run


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    for name in DOCS:
        shutil.copy(SAMPLES / name, folder / name)
    return folder


def test_deployments_from_prefect_yaml(deployed: None) -> None:
    with get_client(sync_client=True) as client:
        scheduled = client.read_deployment_by_name("ingest/ingest-scheduled")
        gpu = client.read_deployment_by_name("embed/embed-gpu")
        manual = client.read_deployment_by_name("ingest/ingest-manual")
        replay = client.read_deployment_by_name("dlq_replay/dlq-replay")
        reindex = client.read_deployment_by_name("reindex/reindex")
        pool = client.read_work_pool("genai-ingest-gpu")
    [schedule] = scheduled.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "Europe/Berlin"
    [every_15_min] = replay.schedules  # transient entries come back without an operator
    assert every_15_min.schedule.interval.total_seconds() == 900 and every_15_min.active
    assert every_15_min.parameters == {"error_kind": "transient", "max_attempts": 8}
    assert replay.parameters == {"settings_block": "genai-ingest"}
    assert reindex.parameters == {"settings_block": "genai-ingest"}
    assert reindex.parameter_openapi_schema["properties"]["action"]["enum"] == [
        "build", "swap", "rollback", "drop_previous"
    ]  # fmt: skip
    assert gpu.work_pool_name == "genai-ingest-gpu"
    assert gpu.job_variables["gpu_count"] == 1
    assert gpu.job_variables["image"] == "registry.example.com/genai-ingest-gpu:test"
    assert "gpu_count" in pool.base_job_template["variables"]["properties"]
    properties = manual.parameter_openapi_schema["properties"]
    assert properties["sources"]["type"] == "array"
    assert "settings block" in properties["settings_block"]["description"].lower()
    assert manual.pull_steps[0]["prefect.deployments.steps.git_clone"]["repository"] == (
        "https://git.example.com/genai-ingest.git"
    )


def test_manual_ingest_through_a_worker_then_gpu_fanout(
    deployed: None, env: dict[str, str], folder: Path, tmp_path: Path
) -> None:
    block_name = "deployment-test"
    IngestSettingsBlock(data_dir=str(tmp_path / "in-process")).save(block_name, overwrite=True)
    run = _run(
        "ingest/ingest-manual-local", {"sources": [str(folder)], "settings_block": block_name}
    )
    stats = cli_stats(env, tmp_path / "in-process")
    assert stats["documents"] == len(DOCS) and stats["chunks"] > 0 and stats["dlq"] == 0
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    summary = next(a for a in artifacts if a.key == "ingest-summary")
    assert "| documents_indexed | 3 |" in str(summary.data)

    fanned = _run(
        "ingest/ingest-manual-local",
        {
            "sources": [str(folder)],
            "settings": {
                "data_dir": str(tmp_path / "fanout"),
                "documents_per_batch": 2,
                "embed_deployment": "embed/embed-local",
                "batch_store_url": str(tmp_path / "batches"),
                "embed_parallelism": 2,
                "embed_timeout_s": 180,
            },
        },
    )
    assert fanned.state is not None
    remote = cli_stats(env, tmp_path / "fanout")
    assert remote["chunk_ids_sha256"] == stats["chunk_ids_sha256"]
    assert remote["documents"] == stats["documents"]
    vectors = list((tmp_path / "batches" / "embed").glob("*/vectors.npz"))
    assert len(vectors) == 2  # one embed run per batch of two documents
