"""Each notebook runs headlessly (``app.run()``) against a DLQ and index seeded by a real ingest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_triage import DOCX, PDF, XLSX, copy_state, seed_template

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture
def data_dir(prefect_server: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    return copy_state(seed_template(tmp_path_factory.getbasetemp()), tmp_path / "state")


def load_notebook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"notebook_{name}", NOTEBOOKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_notebook(
    name: str, monkeypatch: pytest.MonkeyPatch, *args: str, defs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run a notebook as a script with ``args`` as its command line; returns its definitions."""
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    _, definitions = load_notebook(name).app.run(defs=defs)
    return dict(definitions)


def test_dlq_triage_lists_the_seeded_entries(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENAI_INGEST_DATA_DIR", str(data_dir))
    defs = run_notebook("dlq_triage", monkeypatch)
    assert defs["settings"].data_dir == data_dir
    assert defs["stats"]["open"] == 3 and defs["stats"]["by_stage"] == {"parse": 3}
    assert sorted(defs["table"].data["name"]) == sorted([PDF, DOCX, XLSX])
    assert defs["selected_ids"] == []
    assert "Select entries" in defs["detail"].text
    assert defs["outcome_view"].text == ""


def test_dlq_triage_shows_the_detail_of_a_selected_entry(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENAI_INGEST_DATA_DIR", raising=False)
    first = run_notebook("dlq_triage", monkeypatch, "--data-dir", str(data_dir))
    pdf = next(e.entry_id for e in first["shown"] if e.source.endswith(PDF))
    defs = run_notebook(
        "dlq_triage", monkeypatch, "--data-dir", str(data_dir), defs={"selected_ids": [pdf]}
    )
    detail = defs["detail"].text
    assert PDF in detail and "password_required" in detail
    assert "encrypted: enter its password to preview" in detail
    assert "Actions on 1 selected" not in detail


def test_search_explorer_finds_the_seeded_document(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENAI_INGEST_DATA_DIR", str(data_dir))
    defs = run_notebook("search_explorer", monkeypatch, "--query", "Who founded IBM?")
    hits = defs["hits"]
    assert len(hits) == 5 and set(hits["name"]) == {"docling_wiki.md"}
    assert hits["score"].is_monotonic_decreasing and hits["score"][0] > 0  # a fusion score
    assert hits["headings"][0].startswith("IBM")
    assert list(defs["sources"]["name"]) == ["docling_wiki.md"]
    assert defs["stats"]["documents"] == 1 and defs["stats"]["dlq_open"] == 3
