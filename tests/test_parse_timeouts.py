"""Parse cost that settles: blank pages cost no OCR, and a document whose parse keeps timing
out fails for good after ``policies.parse_timeout.settle_after_runs`` runs of the same bytes;
later unchanged runs skip it without parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.ingest import ingest
from genai_ingest.config import ParseSettings, Settings
from genai_ingest.failures.policies import ParseTimeoutPolicy, Policies
from genai_ingest.models import document_id
from genai_ingest.parse.isolation import ParserPool
from genai_ingest.run.runtime import runtime_for
from tests.pdfgen import drawn_pages_pdf

REPORT = ["The survey counted the birds nesting along the northern shore of the lake."] * 6


def test_blank_pages_are_not_ocrd_so_the_document_parses_within_a_short_deadline() -> None:
    # 300 pages that need OCR by their text, ~1 s each when OCR'd: far past 60 s.
    pdf = drawn_pages_pdf(REPORT, blank=200, white=100)
    settings = ParseSettings(workers=1, timeout_s=60, timeout_per_page_s=0, max_timeout_s=60)
    pool = ParserPool(settings)
    try:
        parsed = pool.parse(pdf, "survey.pdf", settings)
    finally:
        pool.close()
    assert parsed.pages == 301
    assert "birds nesting" in parsed.text


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_repeated_parse_timeouts_settle_and_unchanged_reruns_are_free(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "survey.pdf").write_bytes(drawn_pages_pdf(REPORT, blank=0, white=0, barred=8))
    doc_id = document_id((docs / "survey.pdf").resolve().as_uri())
    # OCR of eight pages takes seconds: past this deadline on every run
    parse = ParseSettings(workers=1, timeout_s=1, timeout_per_mb_s=0, timeout_per_page_s=0)
    settings = Settings(
        data_dir=tmp_path / "state",
        parse=parse,
        policies=Policies(parse_timeout=ParseTimeoutPolicy(settle_after_runs=2)),
    )
    rt = runtime_for(settings)

    first = ingest(sources=[str(docs)], settings=settings)
    assert first["documents_failed"] == 1
    entry = rt.dlq.get(doc_id)
    assert entry is not None and (entry.error_class, entry.error_kind) == ("timeout", "transient")

    second = ingest(sources=[str(docs)], settings=settings)
    assert second["documents_failed"] == 1
    entry = rt.dlq.get(doc_id)
    assert entry is not None and entry.attempts == 2
    assert (entry.error_class, entry.error_kind) == ("timeout_settled", "permanent")
    assert "policies.parse_timeout.settle_after_runs" in entry.reason

    third = ingest(sources=[str(docs)], settings=settings)
    assert third["documents_unchanged"] == 1 and third["documents_failed"] == 0
    assert rt.dlq.get(doc_id).attempts == 2  # not parsed again

    (docs / "survey.pdf").write_bytes(drawn_pages_pdf(REPORT, blank=1, white=0, barred=8))
    changed = ingest(sources=[str(docs)], settings=settings)
    assert changed["documents_failed"] == 1
    assert rt.dlq.get(doc_id).error_class == "timeout"  # new bytes: transient again
