"""The GPU fan-out against the local Kubernetes control plane when its pods go wrong: a real
``genai-ingest run`` sends its batch to the ``embed-gpu`` deployment, the worker
(``flows/k8s_worker.py``) submits the Jobs, and the test plays the cluster: a pod that ends
without its flow ever reporting, a pod failed and a node lost mid-batch, no GPU free. Each time
the batch is redone (a second run, then the ingest process with the same model), the index
equals a clean run's, nothing is dead-lettered and no embed run is left Pending or Running.

kwok runs no containers: these tests cover what Kubernetes and Prefect do around a pod; the
embedding inside one stays covered by the process-worker tests (tests/test_deployment.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from flows.embed import BATCH_FILE, decode_vectors, embed
from genai_ingest.stores.object_store import open_object
from tests.conftest import SAMPLES, cli_stats
from tests.k8s_live import K8S_SH, NAMESPACE, kube_json, kubectl, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

GENAI_INGEST = Path(sys.executable).parent / "genai-ingest"
DOC = "docling_wiki.md"  # one small document: one batch, one embed run per attempt
INGEST_S = 300  # model load, parse, two GPU attempts and the local fallback
# The encoder a GPU pod runs (flows/embed.py): the fp32 model, chunk and windows encoded
# separately. A clean in-process run with it gives the vectors a pod would have given.
POD_ENCODER = {
    "GENAI_INGEST_EMBED__BACKEND": "torch",
    "GENAI_INGEST_EMBED__WINDOW_POOLING": "separate",
}
GPU_LIMIT = {"nvidia.com/gpu": "1"}
Act = Callable[[dict[str, Any], int], None]  # (pod, attempt index) -> a fault


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    (folder / DOC).write_bytes((SAMPLES / DOC).read_bytes())
    return folder


def _vectors(data_dir: Path) -> dict[str, np.ndarray]:
    """Every stored chunk's vector rows, by chunk id."""
    with sqlite3.connect(f"file:{data_dir / 'genai-ingest.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT chunk_id, vector FROM chunks").fetchall()
    return {chunk_id: np.frombuffer(blob, np.float32) for chunk_id, blob in rows}


@pytest.fixture(scope="module")
def clean(
    prefect_server: str, folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, np.ndarray]:
    """The index of the same document embedded in process, nothing going wrong."""
    data_dir = tmp_path_factory.mktemp("clean")
    done = subprocess.run(
        [str(GENAI_INGEST), "run", str(folder), "--data-dir", str(data_dir), "--json"],
        env={**os.environ, **POD_ENCODER, "PREFECT_API_URL": prefect_server},
        capture_output=True,
        text=True,
        timeout=INGEST_S,
    )
    assert done.returncode == 0, done.stderr
    return _vectors(data_dir)


@pytest.fixture
def fresh_namespace(cluster: Path, workers: None) -> Iterator[Path]:
    """No Job of an earlier test holding a GPU; every kwok node back afterwards."""
    kubectl(cluster, "-n", NAMESPACE, "delete", "jobs", "--all", "--wait=true")
    yield cluster
    kubectl(cluster, "-n", NAMESPACE, "delete", "jobs,pods", "--all", "--wait=false")
    subprocess.run([str(K8S_SH), "nodes"], check=True, capture_output=True, timeout=180)


def _embed_pods(cluster: Path) -> list[dict[str, Any]]:
    pods = kube_json(cluster, "-n", NAMESPACE, "get", "pods")["items"]
    return [
        pod
        for pod in pods
        if pod["metadata"]["labels"].get("prefect.io/flow-run-name", "").startswith("embed-")
    ]


def _ingest(
    cluster: Path, prefect_server: str, folder: Path, data_dir: Path, timeout_s: float, act: Act
) -> tuple[float, list[UUID]]:
    """``genai-ingest run`` with the GPU fan-out; ``act`` is called once on each embed pod
    that is Running. Returns the run's wall time and the embed flow runs, in order."""
    env = {
        **os.environ,
        **POD_ENCODER,
        "PREFECT_API_URL": prefect_server,
        "GENAI_INGEST_EMBED_DEPLOYMENT": "embed/embed-gpu",
        "GENAI_INGEST_BATCH_STORE_URL": str(data_dir.parent / f"{data_dir.name}-batches"),
        "GENAI_INGEST_EMBED_TIMEOUT_S": str(timeout_s),
    }
    started = time.monotonic()
    command = [str(GENAI_INGEST), "run", str(folder), "--data-dir", str(data_dir), "--json"]
    ingest = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs: list[UUID] = []
    acted: set[str] = set()
    while ingest.poll() is None and time.monotonic() - started < INGEST_S:
        for pod in _embed_pods(cluster):
            run_id = UUID(pod["metadata"]["labels"]["prefect.io/flow-run-id"])
            if run_id not in runs:
                runs.append(run_id)
            name = pod["metadata"]["name"]
            if name not in acted and pod["status"].get("phase") == "Running":
                acted.add(name)
                act(pod, runs.index(run_id))
        time.sleep(0.5)
    _, err = ingest.communicate(timeout=30)
    assert ingest.returncode == 0, err.decode()[-3000:]
    return time.monotonic() - started, runs


def _assert_index_is_clean(data_dir: Path, clean: dict[str, np.ndarray]) -> None:
    stats = cli_stats(dict(os.environ), data_dir)
    assert stats["dlq"] == 0, "nothing lost"
    index = _vectors(data_dir)
    assert index.keys() == clean.keys(), "the same chunks, none twice"
    for chunk_id, vector in clean.items():
        np.testing.assert_allclose(index[chunk_id], vector, atol=1e-5)


def _states(runs: list[UUID]) -> list[Any]:
    with get_client(sync_client=True) as client:
        return [client.read_flow_run(run).state for run in runs]


def _annotate_exit(cluster: Path, pod: dict[str, Any], code: int) -> None:
    name = pod["metadata"]["name"]
    annotation = f"kwok.genai-ingest/exit-code={code}"
    kubectl(cluster, "-n", NAMESPACE, "annotate", "pod", name, annotation, "--overwrite")


def test_a_pod_that_ends_without_its_flow_reporting_is_a_crash_and_the_batch_is_redone(
    fresh_namespace: Path, prefect_server: str, folder: Path, tmp_path: Path, clean: Any
) -> None:
    cluster = fresh_namespace
    timeout_s = 240.0  # far above what the detection takes: it must not be the timeout

    def exit_zero(pod: dict[str, Any], attempt: int) -> None:
        _annotate_exit(cluster, pod, 0)  # the container "succeeds" before the engine ran

    data_dir = tmp_path / "index"
    wall_s, runs = _ingest(cluster, prefect_server, folder, data_dir, timeout_s, exit_zero)
    assert len(runs) == 2, "a second run, then the batch embedded here"
    states = _states(runs)
    assert [s.type for s in states] == [StateType.CRASHED] * 2, states
    assert all("the flow never ran" in (s.message or "") for s in states)
    assert wall_s < timeout_s, f"detected as a crash, not waited out: {wall_s:.0f} s"
    _assert_index_is_clean(data_dir, clean)


def test_a_failed_pod_and_a_lost_node_mid_batch_redo_the_batch(
    fresh_namespace: Path, prefect_server: str, folder: Path, tmp_path: Path, clean: Any
) -> None:
    cluster = fresh_namespace
    lost: list[str] = []

    def fail_then_lose_the_node(pod: dict[str, Any], attempt: int) -> None:
        if attempt == 0:
            _annotate_exit(cluster, pod, 137)  # killed: evicted, OOM
        else:
            lost.append(pod["spec"]["nodeName"])
            kubectl(cluster, "delete", "node", lost[-1], "--wait=false")

    data_dir = tmp_path / "index"
    _, runs = _ingest(cluster, prefect_server, folder, data_dir, 240.0, fail_then_lose_the_node)
    assert len(runs) == 2 and lost, "one pod failed, then the node of the second one lost"
    states = _states(runs)
    assert all(s.type is StateType.CRASHED for s in states), states
    _assert_index_is_clean(data_dir, clean)


def _gpu_nodes(cluster: Path) -> list[str]:
    nodes = kube_json(cluster, "get", "nodes", "-l", "genai-ingest/pool=gpu")["items"]
    return [node["metadata"]["name"] for node in nodes]


def _occupy_every_gpu(cluster: Path) -> None:
    """One pod per GPU node holding its GPU (another team's job)."""
    for node in _gpu_nodes(cluster):
        spec = {
            "nodeName": node,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "hog", "image": "busybox", "resources": {"limits": GPU_LIMIT}}],
        }
        overrides = json.dumps({"spec": spec})
        kubectl(
            cluster, "-n", NAMESPACE, "run", f"hog-{node}", "--image=busybox",
            "--restart=Never", f"--overrides={overrides}",
        )  # fmt: skip


def test_no_gpu_free_the_batch_is_embedded_here_and_a_late_pod_writes_nothing_twice(
    fresh_namespace: Path, prefect_server: str, folder: Path, tmp_path: Path, clean: Any
) -> None:
    cluster = fresh_namespace
    _occupy_every_gpu(cluster)
    timeout_s = 15.0

    def never(pod: dict[str, Any], attempt: int) -> None:
        pytest.fail(f"an embed pod ran although every GPU is taken: {pod['metadata']['name']}")

    data_dir = tmp_path / "index"
    wall_s, runs = _ingest(cluster, prefect_server, folder, data_dir, timeout_s, never)
    assert len(runs) == 2, "two runs waited Pending, then the batch was embedded here"
    assert wall_s < INGEST_S
    states = wait_for(
        "both runs Cancelled",
        lambda: (s := _states(runs)) and all(x.type is StateType.CANCELLED for x in s) and s,
        60,
    )
    assert all(s.type is StateType.CANCELLED for s in states)
    kubectl(cluster, "-n", NAMESPACE, "delete", "pods", "-l", "run", "--wait=true")  # GPUs free
    time.sleep(5)
    assert not _embed_pods(cluster), "no Job left to start late"
    _assert_index_is_clean(data_dir, clean)

    # Had a pod started anyway, it would run the embed flow: it writes the batch's vectors under
    # the batch's content key, never the index, and they are the ones the index already holds.
    [batch] = (data_dir.parent / f"{data_dir.name}-batches").glob(f"embed/*/{BATCH_FILE}")
    store, key = open_object(embed(batch=batch.as_uri()))
    pod_vectors, _, _ = decode_vectors(store.read(key))
    rows = np.concatenate(list(_vectors(data_dir).values())).reshape(-1, pod_vectors.shape[1])
    nearest = np.abs(pod_vectors[:, None, :] - rows[None, :, :]).max(axis=2).min(axis=1)
    assert nearest.max() < 1e-4, "the fallback embedded what the pod would have"
    _assert_index_is_clean(data_dir, clean)
