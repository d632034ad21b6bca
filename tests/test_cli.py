"""The ``genai-ingest`` command as a user runs it: real subprocesses, real Prefect server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLES

pytestmark = pytest.mark.slow

RUN_KEYS = {
    "documents_seen",
    "documents_indexed",
    "documents_unchanged",
    "documents_failed",
    "chunks_written",
    "chunks_deleted",
    "chunks_duplicate",
    "embeddings_computed",
}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "genai-ingest"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def as_json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> dict:
    """One run over a copy of the samples, shared by the read-only tests below."""
    import os

    root = tmp_path_factory.mktemp("cli")
    docs = root / "docs"
    shutil.copytree(SAMPLES, docs)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    data_dir = root / "state"
    report = as_json(cli(env, "run", str(docs), "--json", "--data-dir", str(data_dir)))
    return {"env": env, "docs": docs, "data_dir": data_dir, "report": report}


def test_run_prints_the_documented_json_and_exits_zero_with_dlq_entries(ingested: dict) -> None:
    report = ingested["report"]
    assert set(report) >= RUN_KEYS
    assert report["documents_failed"] == 1 and report["chunks_written"] > 0


def test_rerun_changes_nothing_and_stats_digest_is_stable(ingested: dict) -> None:
    env, data = ingested["env"], ["--data-dir", str(ingested["data_dir"])]
    stats = as_json(cli(env, "stats", "--json", *data))
    assert set(stats) >= {"documents", "chunks", "dlq", "chunk_ids_sha256"}
    assert stats["dlq"] == 1 and stats["chunks"] == ingested["report"]["chunks_written"]
    again = as_json(cli(env, "run", str(ingested["docs"]), "--json", *data))
    assert again["embeddings_computed"] == again["chunks_written"] == 0
    assert (
        as_json(cli(env, "stats", "--json", *data))["chunk_ids_sha256"] == stats["chunk_ids_sha256"]
    )


def test_fail_on_dlq_exits_3(ingested: dict) -> None:
    result = cli(
        ingested["env"],
        "run",
        str(ingested["docs"]),
        "--json",
        "--fail-on-dlq",
        "--data-dir",
        str(ingested["data_dir"]),
    )
    assert result.returncode == 3, result.stderr[-2000:]


def test_search_json_hits(ingested: dict) -> None:
    hits = as_json(
        cli(
            ingested["env"],
            "search",
            "the Magnetic Tape Selectric Typewriter",
            "--k",
            "2",
            "--json",
            "--data-dir",
            str(ingested["data_dir"]),
        )
    )
    assert len(hits) == 2
    assert set(hits[0]) == {
        *("doc_id", "chunk_id", "source", "score", "text", "mode"),
        *("page_start", "page_end", "headings"),
    }
    assert hits[0]["mode"] == "hybrid"  # the default search.mode
    assert hits[0]["source"].endswith("docling_multi_page.pdf")
    assert hits[0]["page_start"] == 1


def test_dlq_list_show_and_discard(ingested: dict, tmp_path: Path) -> None:
    data_dir = tmp_path / "copy"
    shutil.copytree(ingested["data_dir"], data_dir)
    env, data = ingested["env"], ["--data-dir", str(data_dir)]
    [entry] = as_json(cli(env, "dlq", "list", "--json", *data))
    assert entry["error_class"] == "password_required" and entry["stage"] == "parse"
    shown = as_json(cli(env, "dlq", "show", entry["entry_id"][:8], "--json", *data))
    assert "PasswordRequired" in shown["traceback"] and shown["attempts"] == 1
    discarded = cli(env, "dlq", "discard", entry["entry_id"][:8], "--reason", "not ours", *data)
    assert discarded.returncode == 0, discarded.stderr
    assert as_json(cli(env, "dlq", "list", "--json", *data)) == []
    [closed] = as_json(cli(env, "dlq", "list", "--status", "all", "--json", *data))
    assert closed["status"] == "discarded" and closed["resolution"] == "not ours"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run"], "Missing argument"),
        (["run", "/no/such/folder"], "no such file or folder"),
        (["search", "x", "--k", "0"], "Invalid value"),
        (["dlq", "replay"], "give entry ids, --all"),
        (["dlq", "show", "zzzz"], "0 DLQ entries match"),
    ],
)
def test_bad_arguments_get_a_clear_message_not_a_traceback(
    args: list[str], message: str, cli_env: dict[str, str]
) -> None:
    result = cli(cli_env, *args)
    assert result.returncode == 2
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
