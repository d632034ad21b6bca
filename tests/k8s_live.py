"""The local Kubernetes control plane of deploy/kubernetes/ for tests: started through its script
(reused when running), and read with kubectl, the client an operator would use."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import REPO

K8S_SH = REPO / "deploy" / "kubernetes" / "k8s.sh"
NAMESPACE = "genai-ingest"  # the pool templates' default namespace (docs/deploy.md, step 2)
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
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


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
