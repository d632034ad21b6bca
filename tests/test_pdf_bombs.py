"""A FlateDecode content bomb (a few MB inflating to a gigabyte) is cut before the parsers
read it: the page's text is indexed, the worker does not abort."""

from __future__ import annotations

import io

import pikepdf

from genai_ingest.config import ParseSettings
from genai_ingest.parse.isolation import ParserPool
from genai_ingest.parse.pdf_bombs import defuse_content_bombs
from tests.pdfgen import flate_bomb_pdf, text_pdf

LINES = ["Quarterly report on river water quality in the northern region."] * 3


def test_a_content_bomb_is_cut_and_its_text_indexed_in_a_worker() -> None:
    bomb = flate_bomb_pdf(LINES, decoded_mb=1024)
    assert len(bomb) < 3_000_000
    settings = ParseSettings(workers=1)
    pool = ParserPool(settings)
    try:
        parsed = pool.parse(bomb, "report.pdf", settings)
    finally:
        pool.close()
    assert "river water quality" in parsed.text
    assert any("parse.max_page_content_mb" in warning for warning in parsed.warnings)


def test_ordinary_pages_are_left_alone() -> None:
    with pikepdf.open(io.BytesIO(text_pdf([LINES, LINES]))) as pdf:
        before = [page.Contents.read_bytes() for page in pdf.pages]
        assert defuse_content_bombs(pdf, limit=1024, max_pages=10) == []
        assert [page.Contents.read_bytes() for page in pdf.pages] == before


def test_the_cut_keeps_whole_operators_up_to_the_limit() -> None:
    with pikepdf.open(io.BytesIO(flate_bomb_pdf(LINES, decoded_mb=8))) as pdf:
        assert defuse_content_bombs(pdf, limit=1 << 20, max_pages=10) == [1]
        content = pdf.pages[0].Contents.read_bytes()
    assert len(content) <= 1 << 20
    assert content.startswith(b"BT") and content[-1:].isspace()  # cut between tokens
