"""``genai-ingest run DIR --embedder URL`` against a real local OpenAI-compatible server
(``fault_server``): no key is needed unless the endpoint asks for one; a refused key is a clear,
classified error naming the setting, never a traceback, and the key is never printed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_server import FaultServers, fault_servers

from genai_ingest.embed.local import LocalEmbedder
from tests.conftest import SAMPLES

pytestmark = pytest.mark.slow

API_KEY = "sk-cli-test-7c1d9e0f2b3a4c5d"
TEXT_SAMPLES = ("docling_wiki.md", "unstructured_book-war-and-peace-1p.txt")


@pytest.fixture
def servers(local_embedder: LocalEmbedder) -> Iterator[FaultServers]:
    with fault_servers(local_embedder) as started:
        yield started


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in TEXT_SAMPLES:
        shutil.copy(SAMPLES / name, folder / name)
    return folder


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment with no embedder key anywhere; local queries fp32, the vectors of
    the endpoint (an int8 query encoder is another encoder: ``test_encoders.py``)."""
    env = {k: v for k, v in cli_env.items() if k != "GENAI_INGEST_EMBEDDER_API_KEY"}
    return {
        **env,
        "GENAI_INGEST_EMBED__PRECISION": "fp32",
        "GENAI_INGEST_EMBED__WINDOW_POOLING": "separate",
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "genai-ingest"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_endpoint_without_auth(servers: FaultServers, docs: Path, env: dict[str, str]) -> None:
    server = servers.start()
    result = cli(env, "run", str(docs), "--embedder", server.url, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["documents_indexed"] == len(TEXT_SAMPLES)
    # one vector per chunk and per sentence window of a long chunk, all from the endpoint
    assert report["embeddings_computed"] >= report["chunks_written"] > 0
    assert server.counts["ok"] > 0 and set(server.auth_headers) == {None}  # no key sent

    hits = cli(env, "search", "Anna Pavlovna, maid of honor", "--k", "1", "--json")
    assert hits.returncode == 0, hits.stderr[-2000:]
    assert json.loads(hits.stdout)[0]["source"].endswith("war-and-peace-1p.txt")


def test_endpoint_asking_for_a_key(servers: FaultServers, docs: Path, env: dict[str, str]) -> None:
    server = servers.start(api_key=API_KEY)
    refused = cli(env, "run", str(docs), "--embedder", server.url, "--json")
    assert refused.returncode == 2
    assert "error (unauthorized)" in refused.stderr and "HTTP 401" in refused.stderr
    assert "--embedder-api-key-env" in refused.stderr
    assert "Traceback" not in refused.stderr

    env = {**env, "TEAM_EMBED_KEY": API_KEY}
    args = ["run", str(docs), "--embedder", server.url, "--embedder-api-key-env", "TEAM_EMBED_KEY"]
    accepted = cli(env, *args, "--json")
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert json.loads(accepted.stdout)["documents_indexed"] == len(TEXT_SAMPLES)
    assert server.auth_headers[-1] == f"Bearer {API_KEY}"
    assert API_KEY not in accepted.stdout + accepted.stderr + refused.stderr

    requests = server.counts["requests"]
    env["TEAM_EMBED_KEY"] = "sk-wrong-key-000000000000"
    unchanged = cli(env, *args, "--json")  # nothing to embed: the endpoint is not asked
    assert unchanged.returncode == 0, unchanged.stderr[-3000:]
    assert server.counts["requests"] == requests
