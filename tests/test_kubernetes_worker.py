"""prefect-kubernetes' KubernetesWorker against a real API server (deploy/kubernetes/: etcd,
kube-apiserver, controller-manager, scheduler; kwok plays the kubelet of simulated GPU and CPU
nodes, so no container runs). The pools are created from deploy/*.json and the deployments from
prefect.yaml, as in production (docs/deploy.md); the workers submit the Jobs of real flow runs.

What runs inside a pod (the embedding itself) stays covered by the process-worker tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Cancelling

from tests.k8s_live import (
    GPU_TOLERATION,
    IMAGE,
    NAMESPACE,
    POD_PLACED_S,
    job_of,
    kube_json,
    kubectl,
    objects_of_run,
    placed_pods,
    submit,
    unschedulable,
    wait_for,
)

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

CANCELLED_S = 90  # Cancelling in Prefect -> Job and pod gone, run Cancelled


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
        submit("embed/embed-gpu", {"batch": f"s3://genai-ingest/state/embed/k8s-{i}/batch.json"})
        for i in range(len(gpu_nodes) + 1)  # one GPU more than the pool has
    ]
    for run in runs:  # accepted by the API server as the worker rendered it
        job = job_of(cluster, run)
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
        "every pod bound or unschedulable", lambda: placed_pods(cluster, runs), POD_PLACED_S
    )
    bound = [pod["spec"]["nodeName"] for pod in pods if pod["spec"].get("nodeName")]
    assert sorted(bound) == sorted(gpu_nodes), "one pod on each GPU node, none on a CPU node"
    assert all(gpu_nodes[node]["nvidia.com/gpu.present"] == "true" for node in bound)
    [waiting] = [unschedulable(pod) for pod in pods if not pod["spec"].get("nodeName")]
    assert waiting is not None and "Insufficient nvidia.com/gpu" in waiting, waiting


def test_cpu_shard_job_binds_to_a_cpu_node(cluster: Path, workers: None) -> None:
    run = submit(
        "ingest-shard/ingest-shard",
        {
            "sources": ["s3://genai-ingest-documents/incoming/"],
            "shard": {"index": 0, "count": 2},
            "settings_block": "genai-ingest",
        },
    )
    container = _container(job_of(cluster, run))
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "6Gi"}
    [pod] = wait_for("the shard pod bound", lambda: placed_pods(cluster, [run]), POD_PLACED_S)
    assert pod["spec"].get("nodeName") in _pool_nodes(cluster, "cpu"), unschedulable(pod)


def test_cancel_deletes_the_job_and_its_pod(cluster: Path, workers: None) -> None:
    run = submit(
        "ingest-shard/ingest-shard",
        {"sources": ["s3://genai-ingest-documents/incoming/"], "shard": {"index": 1, "count": 2}},
    )
    job = job_of(cluster, run)
    [pod] = wait_for("the pod bound", lambda: placed_pods(cluster, [run]), POD_PLACED_S)
    assert pod["spec"].get("nodeName"), unschedulable(pod)
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
