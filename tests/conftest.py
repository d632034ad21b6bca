"""Shared fixtures: one Prefect home and one Prefect test server per session, the real
embedding model loaded once, and settings pointing at a fresh data dir per test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

_SESSION_HOME = tempfile.mkdtemp(prefix="genai-ingest-prefect-")
os.environ["PREFECT_HOME"] = _SESSION_HOME
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# query encoder exports (genai_ingest.embed.query_encoder) of this session, not in ~/.cache
os.environ.setdefault(
    "GENAI_INGEST_QUERY_ENCODER__CACHE_DIR", tempfile.mkdtemp(prefix="genai-ingest-qe-")
)

import pytest  # noqa: E402

from genai_ingest.config import Settings  # noqa: E402

if TYPE_CHECKING:
    from genai_ingest.embed.local import LocalEmbedder

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
SAMPLES = REPO / "samples"
CORPUS = REPO.parent / "shared" / "corpus"


def fixture_file(name: str) -> Path:
    """A test document by file name, wherever it lives under tests/data (each is stored once)."""
    [path] = DATA.rglob(name)
    return path


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect server (subprocess, temporary database) for the whole session; yields
    its API URL so subprocesses can use it too."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    """The real all-MiniLM-L6-v2 model, loaded once."""
    from genai_ingest.config import EmbedSettings
    from genai_ingest.embed.local import LocalEmbedder

    return LocalEmbedder(EmbedSettings())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default settings with a fresh data dir."""
    return Settings(data_dir=tmp_path / "state")


@pytest.fixture
def cli_env(prefect_server: str, tmp_path: Path) -> dict[str, str]:
    """Environment for ``genai-ingest`` subprocesses: the session's Prefect server."""
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=prefect_server,
        GENAI_INGEST_DATA_DIR=str(tmp_path / "state"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def alias() -> Iterator[str]:
    """A fresh Elasticsearch alias on the live node (the test skips without one), dropped
    afterwards."""
    from tests.es_live import drop_alias, require_es, unique_alias

    url = require_es()
    name = unique_alias()
    yield name
    drop_alias(url, name)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Path]:
    """The local Kubernetes control plane, ready for our Jobs (``tests/k8s_live.py``)."""
    from tests.k8s_live import prepared_cluster

    yield from prepared_cluster()


@pytest.fixture(scope="session")
def workers(
    prefect_server: str, cluster: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Kubernetes pools, deployments and workers on ``cluster`` (``tests/k8s_live.py``)."""
    from tests.k8s_live import running_workers

    yield from running_workers(prefect_server, cluster, tmp_path_factory.mktemp("workers"))


# Markers of tests that need a live service, and the variable that requires it outside CI.
_LIVE_SERVICES = {
    "elasticsearch": ("Elasticsearch", "GENAI_INGEST_REQUIRE_ES"),
    "k8s": ("the local Kubernetes control plane", "GENAI_INGEST_REQUIRE_K8S"),
}


def _required(variable: str) -> bool:
    """In CI (``CI=true``) or with ``<variable>=1`` no test of that service may skip."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(variable) in ("1", "true")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A skipped ``elasticsearch`` or ``k8s`` test is a failure where the service is required."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    for marker, (service, variable) in _LIVE_SERVICES.items():
        if report.skipped and item.get_closest_marker(marker) and _required(variable):
            report.outcome = "failed"
            report.longrepr = f"{service} test skipped where it is required: {report.longrepr}"


def cli_stats(env: dict[str, str], data_dir: Path) -> dict[str, Any]:
    """``genai-ingest stats --json`` of ``data_dir``, run as a user would."""
    command = Path(sys.executable).parent / "genai-ingest"
    done = subprocess.run(
        [str(command), "stats", "--json", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
