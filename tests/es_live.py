"""Helpers of the live Elasticsearch tests: the node under ``ELASTICSEARCH_URL``, one alias
per test (its indexes deleted afterwards), settings and CLI environments pointing at it, and a
second, short-lived node started with ``deploy/elasticsearch/es.sh`` for the tests that stop a
node or need node settings of their own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from genai_ingest.config import ElasticsearchSettings, Settings
from tests.conftest import REPO, SAMPLES, fixture_file

ES_URL = os.environ.get("ELASTICSEARCH_URL")
SKIP_REASON = "ELASTICSEARCH_URL not set: live Elasticsearch tests skipped"
ES_SH = REPO / "deploy" / "elasticsearch" / "es.sh"
CLI = str(Path(sys.executable).parent / "genai-ingest")
#: Small real documents (text formats: no PDF pipeline), so each run takes seconds.
SMALL_DOCS = {
    SAMPLES / "docling_wiki.md": "a_wiki.md",
    SAMPLES / "unstructured_book-war-and-peace-1p.txt": "b_war_and_peace.txt",
    SAMPLES / "docling_csv-comma.csv": "c_table.csv",
    fixture_file("docling_duck.md"): "d_duck.md",
    fixture_file("unstructured_README.rst"): "e_readme.rst",
    fixture_file("docling_asciidoc_02.asciidoc"): "f_guide.asciidoc",
}


def require_es() -> str:
    if not ES_URL:
        pytest.skip(SKIP_REASON)
    return ES_URL


def unique_alias(prefix: str = "gi-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def es_client(url: str, **options: Any) -> Elasticsearch:
    """A client speaking the node's REST API version (8.x refuses a 9.x client's headers)."""
    from genai_ingest.stores.es_client import client_from_settings

    settings = Settings(store_url=url)
    client = client_from_settings(settings)
    return client.options(**options) if options else client


def drop_alias(url: str, alias: str) -> None:
    """Delete every index of ``alias`` (generations, ledgers, DLQ, claims)."""
    client = es_client(url)
    try:
        names = list(client.indices.get(index=f"{alias}-*", expand_wildcards="all"))
        if names:
            client.indices.delete(index=names)
    finally:
        client.close()


def open_es_store(alias: str, tmp_path: Path, **options: Any) -> Any:
    """The Elasticsearch store of ``alias`` on the live node, its local state under tmp_path."""
    from genai_ingest.stores.elasticsearch import ElasticsearchVectorStore

    return ElasticsearchVectorStore.from_settings(
        es_settings(require_es(), alias, tmp_path / "state", **options)
    )


def es_settings(url: str, alias: str, data_dir: Path, **options: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        store_url=url,
        elasticsearch=ElasticsearchSettings(index=alias, **options),
    )


def copy_docs(folder: Path, names: dict[Path, str] = SMALL_DOCS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for source, name in names.items():
        shutil.copyfile(source, folder / name)
        (folder / name).chmod(0o644)
    return folder


def cli_env(prefect_api: str, url: str | None, alias: str | None, data_dir: Path) -> dict:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "GENAI_INGEST_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("GENAI_INGEST_STORE_URL", None)
    if url:
        env["GENAI_INGEST_STORE_URL"] = url
        env["GENAI_INGEST_ELASTICSEARCH__INDEX"] = alias or ""
    return env


def embedded_digest(docs: Path, data_dir: Path) -> str:
    """``chunk_ids_sha256`` of a clean in-process run of ``docs`` into the embedded store."""
    from flows.ingest import ingest
    from genai_ingest.run.runtime import runtime_for

    settings = Settings(data_dir=data_dir)
    report = ingest(sources=[str(docs)], settings=settings)
    assert report["documents_failed"] == 0
    return runtime_for(settings).store.stats().chunk_ids_sha256


def cli(env: dict[str, str], *args: str, timeout: float = 600) -> Any:
    """Run ``genai-ingest ARGS --json``; returns the parsed output (exit code 0 asserted)."""
    result = subprocess.run(
        [CLI, *args, "--json"], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


class Node:
    """A single-node cluster from ``es.sh`` on its own port (and data folder)."""

    def __init__(self, port: int, settings: str = "") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "ES_PORT": str(port), "ES_SETTINGS": settings, "ES_HEAP": "512m"}

    def es(self, command: str) -> str:
        result = subprocess.run(
            [str(ES_SH), command], env=self.env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip()


@contextmanager
def second_node(port: int, settings: str = "") -> Iterator[Node]:
    """A second node (512 MB heap): stopped and its data folder removed afterwards."""
    node = Node(port, settings)
    node.es("start")
    try:
        yield node
    finally:
        node.es("wipe")
