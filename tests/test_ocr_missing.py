"""Without Tesseract a text PDF keeps its pages with text: only the page that needed OCR is
flagged, and the first run after Tesseract is installed reads it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.ingest import ingest
from genai_ingest.config import ParseSettings, Settings
from genai_ingest.failures.errors import MissingDependency
from genai_ingest.models import DocStatus, document_id
from genai_ingest.parse import ocr
from genai_ingest.parse.document import parse_document
from genai_ingest.run.runtime import runtime_for
from tests.pdfgen import drawn_pages_pdf, text_pdf

REPORT = [
    "The committee reviewed the annual report on water quality in the region.",
    "Measurements were taken at twelve sites along the river during the summer.",
] * 8
#: Page 2 holds a page number only: too little text, so it goes to OCR.
PAGES = [REPORT, ["2"], [line.replace("summer", "winter") for line in REPORT]]


def _set_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setenv("PATH", path)
    ocr.installed_languages.cache_clear()


def _hide_tesseract(monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH without the tesseract binary: only the Python environment's own bin."""
    _set_path(monkeypatch, str(Path(sys.executable).parent))


@pytest.fixture
def without_tesseract(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _hide_tesseract(monkeypatch)
    yield
    monkeypatch.undo()
    ocr.installed_languages.cache_clear()


@pytest.mark.usefixtures("without_tesseract")
def test_pages_with_text_are_kept_and_the_page_without_ocr_is_named() -> None:
    assert not ocr.can_ocr("eng")
    parsed = parse_document(text_pdf(PAGES), "report.pdf", ParseSettings(isolate=False))
    assert "during the summer" in parsed.text and "during the winter" in parsed.text
    assert parsed.metadata["pages_without_ocr"] == "2"
    assert any("page(s) 2 needed OCR" in warning for warning in parsed.warnings)


@pytest.mark.usefixtures("without_tesseract")
def test_a_pdf_without_any_text_still_needs_tesseract() -> None:
    # pages drawn without a text layer (blank pages are not OCR'd at all)
    with pytest.raises(MissingDependency, match="tesseract"):
        parse_document(
            drawn_pages_pdf([], blank=0, white=0, barred=2),
            "scan.pdf",
            ParseSettings(isolate=False),
        )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_the_run_indexes_the_document_and_the_next_run_with_tesseract_reads_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "report.pdf").write_bytes(text_pdf(PAGES))
    doc_id = document_id((docs / "report.pdf").resolve().as_uri())
    settings = Settings(data_dir=tmp_path / "state", parse=ParseSettings(isolate=False))
    path = os.environ["PATH"]

    _hide_tesseract(monkeypatch)
    report = ingest(sources=[str(docs)], settings=settings)
    assert report["documents_indexed"] == 1 and report["dlq_new"] == 0
    record = runtime_for(settings).store.get_document(doc_id)
    assert record is not None and record.status is DocStatus.INDEXED
    assert record.metadata["pages_without_ocr"] == "2"
    unchanged = ingest(sources=[str(docs)], settings=settings)
    assert unchanged["documents_unchanged"] == 1  # still no Tesseract: nothing to redo

    _set_path(monkeypatch, path)
    again = ingest(sources=[str(docs)], settings=settings)
    assert again["documents_unchanged"] == 0 and again["documents_indexed"] == 1
    record = runtime_for(settings).store.get_document(doc_id)
    assert record is not None and record.metadata["pages_without_ocr"] == ""
    assert ingest(sources=[str(docs)], settings=settings)["documents_unchanged"] == 1
