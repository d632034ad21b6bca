"""The GPU pool's base job template: every variable used, every placeholder declared, and the
Job that prefect-kubernetes renders for the embed-gpu deployment valid against the Kubernetes
API schema (kubernetes-validate, strict)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from uuid import uuid4

import pytest
import yaml
from kubernetes_validate import validate
from prefect.client.schemas.objects import Flow, FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.utilities.templating import apply_values
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

from tests.conftest import REPO

KUBERNETES_VERSION = "1.30.0"
TEMPLATE = REPO / "deploy" / "k8s-gpu-pool.json"
CPU_TEMPLATE = REPO / "deploy" / "k8s-cpu-pool.json"
IMAGE = "registry.example.com/genai-ingest-gpu:1.2.3"
PLACEHOLDER = re.compile(r"{{\s*([\w.$-]+)\s*}}")


def _template(path: Any = TEMPLATE) -> dict[str, Any]:
    return json.loads(path.read_text())


def _placeholders(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_placeholders(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_placeholders(v) for v in node))
    return set(PLACEHOLDER.findall(node)) if isinstance(node, str) else set()


def _deployment(name: str) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return next(d for d in config["deployments"] if d["name"] == name)


def _render(
    job_variables: dict[str, Any], template: Any = TEMPLATE, deployment_name: str = "embed-gpu"
) -> dict[str, Any]:
    """The Job manifest the worker would submit for one flow run of the deployment."""
    config = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(
            _template(template), job_variables
        )
    )
    flow = Flow(id=uuid4(), name="embed")
    deployment = DeploymentResponse(id=uuid4(), name=deployment_name, flow_id=flow.id)
    flow_run = FlowRun(id=uuid4(), name="brisk-otter", flow_id=flow.id, deployment_id=deployment.id)
    config.prepare_for_flow_run(flow_run, deployment, flow)
    return config.job_manifest


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as env:  # what `prefect deploy` reads `{{ $VAR }}` from
        env.setenv("GENAI_INGEST_IMAGE", IMAGE)
        job_variables = _deployment("embed-gpu")["work_pool"]["job_variables"]
        return _render(apply_values(job_variables, {}, remove_notset=False))


def test_every_variable_is_used_and_every_placeholder_declared() -> None:
    template = _template()
    declared = set(template["variables"]["properties"])
    used = _placeholders(template["job_configuration"])
    assert declared - used == set(), "declared but never referenced"
    assert used - declared == set(), "referenced but not declared"


def test_embed_gpu_job_variables_are_declared() -> None:
    declared = set(_template()["variables"]["properties"])
    assert set(_deployment("embed-gpu")["work_pool"]["job_variables"]) <= declared


def test_rendered_manifest_is_valid_kubernetes(manifest: dict[str, Any]) -> None:
    validate(manifest, KUBERNETES_VERSION, strict=True)


def test_rendered_manifest_carries_gpu_scheduling_and_secrets(manifest: dict[str, Any]) -> None:
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "genai-ingest-s3",
        "key": "secret-access-key",
    }
    assert env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"]["value"] == "s3-bucket/genai-ingest-results"
    assert "PREFECT__FLOW_RUN_ID" in env  # the worker's own variables are kept
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 3600
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["metadata"]["namespace"] == "genai-ingest"
    assert pod["serviceAccountName"] == "genai-ingest"


def test_cpu_only_override_renders_valid(manifest: dict[str, Any]) -> None:
    cpu = _render({"image": IMAGE, "gpu_count": 0, "node_selector": {}, "tolerations": []})
    validate(cpu, KUBERNETES_VERSION, strict=True)
    assert (
        cpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        == 0
    )


# --- the CPU pool (ingest shards) ---------------------------------------------------------------


def test_cpu_pool_declares_every_variable_it_uses_and_uses_every_one() -> None:
    template = _template(CPU_TEMPLATE)
    declared = set(template["variables"]["properties"])
    assert declared == _placeholders(template["job_configuration"])
    assert set(_deployment("ingest-shard")["work_pool"]["job_variables"]) <= declared


def test_ingest_shard_manifest_is_valid_kubernetes_without_gpu() -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GENAI_INGEST_IMAGE", IMAGE)
        job_variables = _deployment("ingest-shard")["work_pool"]["job_variables"]
        values = apply_values(job_variables, {}, remove_notset=False)
    manifest = _render(values, CPU_TEMPLATE, "ingest-shard")
    validate(manifest, KUBERNETES_VERSION, strict=True)
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "6Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    assert not pod.get("nodeSelector") and not pod.get("tolerations")
    env_vars = {e["name"]: e for e in container["env"]}
    assert env_vars["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"]["value"] == (
        "s3-bucket/genai-ingest-results"
    )
    assert "valueFrom" in env_vars["AWS_SECRET_ACCESS_KEY"]
    assert manifest["spec"]["backoffLimit"] == 0
