"""The local Kubernetes control plane of deploy/kubernetes/ for tests: started through its script
(reused when running), and read with kubectl, the client an operator would use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from tests.conftest import REPO
from tests.processes import prefect_cli, run_checked

K8S_SH = REPO / "deploy" / "kubernetes" / "k8s.sh"
NAMESPACE = "genai-ingest"  # the pool templates' default namespace (docs/deploy.md, step 2)
IMAGE = "registry.example.com/genai-ingest-gpu:k8s-test"
POOLS = {
    "genai-ingest-gpu": "deploy/k8s-gpu-pool.json",
    "genai-ingest-cpu": "deploy/k8s-cpu-pool.json",
}
S3_TEST_KEYS = ("--from-literal=access-key-id=test-id", "--from-literal=secret-access-key=x")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
JOB_SUBMITTED_S = 90  # flow run created -> its Job in the API server (worker polls every 1 s)
POD_PLACED_S = 30  # Job created -> pod bound to a node, or marked unschedulable
T = TypeVar("T")


def _cache_home() -> Path:
    done = subprocess.run([str(K8S_SH), "kubeconfig"], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip()).parent


def start_cluster() -> Path:
    """``k8s.sh start`` (idempotent) and the admin kubeconfig. Building the binaries takes long
    the first time (README), too long for a test: without them the test skips, which CI turns
    into a failure (conftest)."""
    if not (_cache_home() / "bin" / "BUILD-INFO").exists():
        pytest.skip("the local control plane is not built: run `make k8s-start` once")
    done = subprocess.run(
        [str(K8S_SH), "start"], capture_output=True, text=True, timeout=300, env=os.environ
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return run_checked(["kubectl", f"--kubeconfig={kubeconfig}", *args], timeout=120, stdin=stdin)


def kube_json(kubeconfig: Path, *args: str) -> Any:
    return json.loads(kubectl(kubeconfig, *args, "-o", "json"))


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, every_s: float = 0.5) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after the bound."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:g} s")
        time.sleep(every_s)


def objects_of_run(kubeconfig: Path, kind: str, flow_run_id: Any) -> list[dict[str, Any]]:
    """The Jobs or pods the worker created for one flow run (its ``prefect.io/flow-run-id``)."""
    return kube_json(
        kubeconfig, "-n", NAMESPACE, "get", kind, "-l", f"prefect.io/flow-run-id={flow_run_id}"
    )["items"]


def prepared_cluster() -> Iterator[Path]:
    """The control plane with docs/deploy.md's prerequisites (namespace, service account, S3
    secret); Jobs left by an earlier session are deleted first, as they would hold GPUs. A
    control plane this session started is stopped after it; one already running stays."""
    was_running = subprocess.run([str(K8S_SH), "status"], capture_output=True).returncode == 0
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
    if not was_running:
        subprocess.run([str(K8S_SH), "stop"], capture_output=True, timeout=120)


def running_workers(prefect_server: str, cluster: Path, logs: Path) -> Iterator[None]:
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
        prefect_cli(
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
    prefect_cli(env, "deploy", "--name", "embed-gpu", "--name", "ingest-shard")
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


def submit(deployment: str, parameters: dict[str, Any]) -> FlowRun:
    return run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)


def job_of(cluster: Path, run: FlowRun) -> dict[str, Any]:
    [job] = wait_for(
        f"the Job of flow run {run.name}",
        lambda: objects_of_run(cluster, "jobs", run.id),
        JOB_SUBMITTED_S,
    )
    return job


def unschedulable(pod: dict[str, Any]) -> str | None:
    """The scheduler's message when it found no node for ``pod``."""
    for condition in pod["status"].get("conditions", []):
        if condition["type"] == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return condition["message"]
    return None


def placed_pods(cluster: Path, runs: list[FlowRun]) -> list[dict[str, Any]] | None:
    """One pod per run, each bound to a node or marked unschedulable; else None."""
    pods = [objects_of_run(cluster, "pods", run.id) for run in runs]
    if not all(len(of_run) == 1 for of_run in pods):
        return None
    placed = [pod for [pod] in pods if pod["spec"].get("nodeName") or unschedulable(pod)]
    return placed if len(placed) == len(runs) else None
