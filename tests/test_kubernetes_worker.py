"""prefect-kubernetes' KubernetesWorker against a real API server (deploy/kubernetes/: etcd,
kube-apiserver, controller-manager, scheduler; kwok plays the kubelet of simulated GPU and CPU
nodes, so no container runs). The pools are created from deploy/*.json and the deployments from
prefect.yaml, as in production (docs/deploy.md); the workers submit the Jobs of real flow runs.

What runs inside a pod (the embedding itself) stays covered by the process-worker tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Cancelling

from tests.conftest import REPO
from tests.k8s_live import NAMESPACE, kube_json, kubectl, objects_of_run, start_cluster, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

BIN = Path(sys.executable).parent
IMAGE = "registry.example.com/genai-ingest-gpu:k8s-test"
POOLS = {
    "genai-ingest-gpu": "deploy/k8s-gpu-pool.json",
    "genai-ingest-cpu": "deploy/k8s-cpu-pool.json",
}
S3_TEST_KEYS = ("--from-literal=access-key-id=test-id", "--from-literal=secret-access-key=x")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
JOB_SUBMITTED_S = 90  # flow run created -> its Job in the API server (worker polls every 1 s)
POD_PLACED_S = 30  # Job created -> pod bound to a node, or marked unschedulable
CANCELLED_S = 90  # Cancelling in Prefect -> Job and pod gone, run Cancelled


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    """The control plane with docs/deploy.md's prerequisites (namespace, service account, S3
    secret); Jobs left by an earlier session are deleted first, as they would hold GPUs."""
    kubeconfig = start_cluster()
    for create in (
        ["create", "namespace", NAMESPACE],
        ["-n", NAMESPACE, "create", "serviceaccount", "genai-ingest"],
        ["-n", NAMESPACE, "create", "secret", "generic", "genai-ingest-s3", *S3_TEST_KEYS],
    ):
        manifest = kubectl(kubeconfig, *create, "--dry-run=client", "-o", "yaml")
        kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)
    kubectl(kubeconfig, "-n", NAMESPACE, "delete", "jobs", "--all", "--wait=true")
    yield kubeconfig
    kubectl(kubeconfig, "-n", NAMESPACE, "delete", "jobs", "--all", "--wait=false")


def _prefect(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def workers(
    prefect_server: str, cluster: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Both Kubernetes pools created from the repo's templates, embed-gpu and ingest-shard
    deployed from prefect.yaml, one real KubernetesWorker per pool (kubeconfig: the cluster's)."""
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_CANCELLATION_POLL_SECONDS": "5",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "KUBECONFIG": str(cluster),
        "GENAI_INGEST_GIT_URL": "https://git.example.com/genai-ingest.git",
        "GENAI_INGEST_GIT_BRANCH": "main",
        "GENAI_INGEST_IMAGE": IMAGE,
    }
    for pool, template in POOLS.items():
        _prefect(
            env,
            "work-pool",
            "create",
            pool,
            "--type",
            "kubernetes",
            "--base-job-template",
            template,
            "--overwrite",
        )
    _prefect(env, "deploy", "--name", "embed-gpu", "--name", "ingest-shard")
    logs = tmp_path_factory.mktemp("workers")
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.k8s_worker", "--pool", pool, "--limit", "8"],
            cwd=REPO,
            env=env,
            stdout=(logs / f"{pool}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for pool in POOLS
    ]
    yield
    for worker in started:
        worker.terminate()
        worker.wait(30)


def _submit(deployment: str, parameters: dict[str, Any]) -> FlowRun:
    return run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)


def _job(cluster: Path, run: FlowRun) -> dict[str, Any]:
    [job] = wait_for(
        f"the Job of flow run {run.name}",
        lambda: objects_of_run(cluster, "jobs", run.id),
        JOB_SUBMITTED_S,
    )
    return job


def _unschedulable(pod: dict[str, Any]) -> str | None:
    """The scheduler's message when it found no node for ``pod``."""
    for condition in pod["status"].get("conditions", []):
        if condition["type"] == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return condition["message"]
    return None


def _placed_pods(cluster: Path, runs: list[FlowRun]) -> list[dict[str, Any]] | None:
    """One pod per run, each bound to a node or marked unschedulable; else None."""
    pods = [objects_of_run(cluster, "pods", run.id) for run in runs]
    if not all(len(of_run) == 1 for of_run in pods):
        return None
    placed = [pod for [pod] in pods if pod["spec"].get("nodeName") or _unschedulable(pod)]
    return placed if len(placed) == len(runs) else None


def _pool_nodes(cluster: Path, pool: str) -> dict[str, dict[str, str]]:
    nodes = kube_json(cluster, "get", "nodes", "-l", f"genai-ingest/pool={pool}")["items"]
    return {node["metadata"]["name"]: node["metadata"]["labels"] for node in nodes}


def _container(job: dict[str, Any]) -> dict[str, Any]:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return container


def test_gpu_jobs_bind_only_to_gpu_nodes_and_wait_when_none_is_free(
    cluster: Path, workers: None
) -> None:
    gpu_nodes = _pool_nodes(cluster, "gpu")
    assert len(gpu_nodes) >= 1 and _pool_nodes(cluster, "cpu"), "both pools registered"
    runs = [
        _submit("embed/embed-gpu", {"batch": f"s3://genai-ingest/state/embed/k8s-{i}/batch.json"})
        for i in range(len(gpu_nodes) + 1)  # one GPU more than the pool has
    ]
    for run in runs:  # accepted by the API server as the worker rendered it
        job = _job(cluster, run)
        container = _container(job)
        assert container["image"] == IMAGE
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        pod_spec = job["spec"]["template"]["spec"]
        assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert GPU_TOLERATION in pod_spec["tolerations"]
        assert pod_spec["serviceAccountName"] == "genai-ingest"
        assert job["spec"]["backoffLimit"] == 0
        env = {entry["name"]: entry.get("value") for entry in container["env"]}
        assert env["PREFECT__FLOW_RUN_ID"] == str(run.id)

    pods = wait_for(
        "every pod bound or unschedulable", lambda: _placed_pods(cluster, runs), POD_PLACED_S
    )
    bound = [pod["spec"]["nodeName"] for pod in pods if pod["spec"].get("nodeName")]
    assert sorted(bound) == sorted(gpu_nodes), "one pod on each GPU node, none on a CPU node"
    assert all(gpu_nodes[node]["nvidia.com/gpu.present"] == "true" for node in bound)
    [waiting] = [_unschedulable(pod) for pod in pods if not pod["spec"].get("nodeName")]
    assert waiting is not None and "Insufficient nvidia.com/gpu" in waiting, waiting


def test_cpu_shard_job_binds_to_a_cpu_node(cluster: Path, workers: None) -> None:
    run = _submit(
        "ingest-shard/ingest-shard",
        {
            "sources": ["s3://genai-ingest-documents/incoming/"],
            "shard": {"index": 0, "count": 2},
            "settings_block": "genai-ingest",
        },
    )
    container = _container(_job(cluster, run))
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "6Gi"}
    [pod] = wait_for("the shard pod bound", lambda: _placed_pods(cluster, [run]), POD_PLACED_S)
    assert pod["spec"].get("nodeName") in _pool_nodes(cluster, "cpu"), _unschedulable(pod)


def test_cancel_deletes_the_job_and_its_pod(cluster: Path, workers: None) -> None:
    run = _submit(
        "ingest-shard/ingest-shard",
        {"sources": ["s3://genai-ingest-documents/incoming/"], "shard": {"index": 1, "count": 2}},
    )
    job = _job(cluster, run)
    [pod] = wait_for("the pod bound", lambda: _placed_pods(cluster, [run]), POD_PLACED_S)
    assert pod["spec"].get("nodeName"), _unschedulable(pod)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(message="cancelled by the k8s test"))
        wait_for(
            "the Job and its pod deleted",
            lambda: (
                not objects_of_run(cluster, "jobs", run.id)
                and not objects_of_run(cluster, "pods", run.id)
            ),
            CANCELLED_S,
        )
        final = wait_for(
            "the flow run Cancelled",
            lambda: (
                (state := client.read_flow_run(run.id).state) and state.is_cancelled() and state
            ),
            CANCELLED_S,
        )
    assert final.name == "Cancelled"
    assert job["metadata"]["name"] not in kubectl(
        cluster, "-n", NAMESPACE, "get", "jobs", "-o", "name"
    )
