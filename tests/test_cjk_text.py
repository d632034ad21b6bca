"""Chinese and Japanese from PDFs, vertical or horizontal, are indexed without a space between
characters, so a search for a word finds it."""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

import pytest

from genai_ingest.config import CleanSettings, ParseSettings
from genai_ingest.parse.document import parse_document
from genai_ingest.text.clean import clean_text
from tests.officegen import soffice_convert

PARAGRAPHS = (
    "日本語の文書は縦書きで印刷されることが多いが、技術文書は横書きが普通である。",
    "东京的图书馆保存旧报纸。中文文本的词语之间没有空格。",
)
WORDS = ("縦書き", "技術文書", "图书馆", "旧报纸")
SPACE_BETWEEN_CJK = re.compile(r"[\u3000-\u30ff\u4e00-\u9fff] +[\u3000-\u30ff\u4e00-\u9fff]")


def _flat_odt(paragraphs: tuple[str, ...], *, vertical: bool) -> bytes:
    """A flat OpenDocument text in a CJK font; ``vertical`` writes top to bottom, right to left."""
    mode = 'style:writing-mode="tb-rl" ' if vertical else ""
    body = "".join(f"<text:p>{escape(p)}</text:p>" for p in paragraphs)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" office:version="1.3"
 office:mimetype="application/vnd.oasis.opendocument.text">
 <office:styles><style:default-style style:family="paragraph"><style:text-properties
  style:font-name-asian="Droid Sans Fallback" fo:font-size="14pt"
  style:font-size-asian="14pt"/></style:default-style></office:styles>
 <office:automatic-styles><style:page-layout style:name="pm1"><style:page-layout-properties
  fo:page-width="21cm" fo:page-height="29.7cm" {mode}fo:margin="2cm"/></style:page-layout>
 </office:automatic-styles>
 <office:master-styles><style:master-page style:name="Standard" style:page-layout-name="pm1"/>
 </office:master-styles>
 <office:body><office:text>{body}</office:text></office:body></office:document>""".encode()


@pytest.mark.parametrize("vertical", [True, False], ids=["vertical", "horizontal"])
def test_cjk_pdf_text_has_no_spaces_between_characters(vertical: bool) -> None:
    pdf = soffice_convert(_flat_odt(PARAGRAPHS * 3, vertical=vertical), "fodt", "pdf")
    parsed = parse_document(pdf, "cjk.pdf", ParseSettings(isolate=False))
    text = clean_text(parsed.text, CleanSettings(), hard_wrapped=True)
    assert not SPACE_BETWEEN_CJK.search(text), text[:200]
    for word in WORDS:
        assert word in text
