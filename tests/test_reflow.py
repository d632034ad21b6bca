"""PDF reflow, one test per rule, on real corpus pages (docling's and pdfium's text layers)."""

from __future__ import annotations

import re
from pathlib import Path

import pypdfium2
import pytest

from genai_ingest.config import CleanSettings, ParseSettings
from genai_ingest.parse.document import PAGE_BREAK, parse_document
from genai_ingest.text.clean import clean_text
from genai_ingest.text.reflow import reflow

PDFS = Path(__file__).parent / "data" / "corpus" / "good" / "pdf"


def pdfium_page(name: str, index: int) -> str:
    document = pypdfium2.PdfDocument(str(PDFS / name))
    try:
        return document[index].get_textpage().get_text_range().replace("\r\n", "\n")
    finally:
        document.close()


@pytest.fixture(scope="module")
def word_processor_pages() -> list[str]:
    """docling's text of a 5-page essay: every line a paragraph of its own."""
    data = (PDFS / "docling_multi_page.pdf").read_bytes()
    parsed = parse_document(data, "docling_multi_page.pdf", ParseSettings())
    assert parsed.parser == "docling"
    return parsed.text.split(PAGE_BREAK)


def paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n\n") if p.strip()]


def test_hard_wrapped_lines_become_one_paragraph(word_processor_pages: list[str]) -> None:
    raw = word_processor_pages[0]
    assert "were not\n\nsoftware programs" in raw
    reflowed = reflow(raw)
    paragraph = next(p for p in paragraphs(reflowed) if "Early word processors" in p)
    assert paragraph.startswith('The term "word processor" first emerged in the 1960s')
    assert paragraph.endswith("were not software programs but rather standalone machines.")
    # pdfium's single-newline layout of the same page reflows the same way
    assert "were not software programs but rather" in reflow(
        pdfium_page("docling_multi_page.pdf", 0)
    )


def test_real_paragraph_breaks_and_headings_stay(word_processor_pages: list[str]) -> None:
    parts = paragraphs(reflow(word_processor_pages[0]))
    assert parts[0] == "The Evolution of the Word Processor"
    assert parts[1].endswith("has evolved through several technological milestones.")
    assert parts[2] == "Pre-Digital Era (19th - Early 20th Century)"
    assert parts[3].startswith("The origins of word processing")


def test_words_hyphenated_at_line_end_are_joined() -> None:
    data = (PDFS / "docling_2305.03393v1-pg9.pdf").read_bytes()
    raw = parse_document(data, "pg9.pdf", ParseSettings()).text
    assert "Ef-\n\nfects" in raw
    reflowed = reflow(raw)
    assert "Effects of reducing the # of layers" in reflowed
    assert "Ef-" not in reflowed


def test_private_use_bullet_glyphs_become_bullets(word_processor_pages: list[str]) -> None:
    raw = pdfium_page("pypdf_GeoBase_NHNC1_Data_Model_UML_EN.pdf", 2)
    assert "\uf0b7 Proposal of options" in raw
    reflowed = reflow(raw)
    assert "\n\n• Proposal of options" in reflowed
    assert "\uf0b7" not in reflowed
    # docling maps the Symbol font's bullet to "∞" at the start of the item
    assert "\n• IBM MT/ST (Magnetic Tape/Selectric Typewriter)" in reflow(word_processor_pages[0])


def test_list_items_stay_items_and_their_wrapped_lines_join(
    word_processor_pages: list[str],
) -> None:
    reflowed = reflow(word_processor_pages[2])
    items = [line for line in reflowed.split("\n") if re.match(r"\d\. ", line)]
    assert [item[:2] for item in items] == ["1.", "2.", "3.", "4.", "5."]
    assert items[0] == (
        "1. Undo/Redo: Introduced in the 1980s, the ability to undo mistakes and redo actions "
        "made experimentation and error correction much easier."
    )


def test_table_lines_are_not_joined() -> None:
    reflowed = reflow(pdfium_page("docling_2305.03393v1-pg9.pdf", 0))
    lines = reflowed.split("\n")
    assert "OTSL 0.965 0.934 0.955 0.88" in " ".join(lines)
    row = next(line for line in lines if "0.965 0.934" in line)
    assert "HTML 0.969" not in row  # the next table row stays a row of its own
    markdown = "| Year | Value |\n|---|---|\n| 2019 | the first value |\n| 2020 | 2 |"
    assert reflow(markdown) == markdown


def test_clean_reflows_hard_wrapped_text_only_and_keeps_pages(
    word_processor_pages: list[str],
) -> None:
    raw = PAGE_BREAK.join(word_processor_pages)
    cleaned = clean_text(raw, CleanSettings(), hard_wrapped=True, keep_pages=True)
    assert cleaned.count(PAGE_BREAK) == len(word_processor_pages) - 1
    assert "were not software programs" in cleaned
    assert "were not\n\nsoftware programs" in clean_text(raw, CleanSettings())
    off = CleanSettings(reflow_hard_wrapped=False)
    assert "were not\n\nsoftware" in clean_text(raw, off, hard_wrapped=True)
