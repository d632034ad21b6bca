"""Parse stage against real docling, pypdfium2, qpdf and Tesseract (no mocks)."""

from __future__ import annotations

import codecs
import io

import pytest
from PIL import Image, ImageDraw, ImageFont

from genai_ingest.config import ParseSettings
from genai_ingest.failures.errors import (
    CorruptDocument,
    EmptyDocument,
    PasswordRequired,
    Stage,
    UnsupportedFormat,
)
from genai_ingest.parse.document import parse_document
from genai_ingest.parse.sniff import decode_text, sniff_format
from tests.conftest import fixture_file


def _read(name: str) -> bytes:
    return fixture_file(name).read_bytes()


def _parse(name: str, settings: ParseSettings | None = None, *, as_name: str | None = None):
    return parse_document(
        _read(name), as_name or name, settings or ParseSettings(), uri=f"file:///data/{name}"
    )


# --- sniffing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "as_name", "expected"),
    [
        ("derived_fake-memo_pdf-as.docx", None, "pdf"),
        ("textract_docx_paragraphs_and_tables", None, "docx"),
        ("unstructured_password_protected.xlsx", None, "ooxml_encrypted"),
        ("unstructured_sample-presentation.pptx", "slides.bin", "pptx"),
        ("unstructured_stanley-cups.xlsx", "sheet", "xlsx"),
        ("derived_word_sample_truncated60.docx", "broken", "docx"),
        ("docling_duck.md", None, "markdown"),
        ("unstructured_fake-html-cp1252.html", "page", "html"),
        ("docling_csv-comma.csv", None, "csv"),
    ],
)
def test_sniff_content_beats_extension(name: str, as_name: str | None, expected: str) -> None:
    assert sniff_format(_read(name), as_name or name) == expected


def test_sniff_text_image_and_binary() -> None:
    assert sniff_format(b"just some words\n", "notes") == "text"
    assert sniff_format("héllo".encode("utf-16-be") * 20, "x.txt") == "text"
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    assert sniff_format(png.getvalue(), "photo.pdf") == "image"
    assert sniff_format(bytes(range(256)) * 8, "blob.txt") == "unknown"


# --- decoding ------------------------------------------------------------------------------


def test_decode_utf16be_without_bom() -> None:
    assert decode_text("Grüße aus Köln".encode("utf-16-be")) == "Grüße aus Köln"


def test_decode_utf16le_and_utf32_with_and_without_bom() -> None:
    text = "naïve café"
    assert decode_text(text.encode("utf-16-le")) == text
    assert decode_text(codecs.BOM_UTF32_LE + text.encode("utf-32-le")) == text
    assert decode_text(text.encode("utf-32-be")) == text


def test_decode_cp1252_legacy_text() -> None:
    data = "Grüße, ça va? Déjà vu – señor".encode("cp1252")
    assert decode_text(data) == "Grüße, ça va? Déjà vu – señor"


def test_decode_replaces_invalid_utf8_instead_of_misdecoding() -> None:
    data = "Prince “Vasili” said".encode() + b" \xff\xfe odd \xc3\x28 bytes \x80 end"
    text = decode_text(data)
    assert text.startswith("Prince “Vasili” said")
    assert "\ufffd" in text and text.endswith("end")


def test_decode_utf8_bom_stripped() -> None:
    assert decode_text(codecs.BOM_UTF8 + "Zürich".encode()) == "Zürich"


# --- docling formats -----------------------------------------------------------------------


def test_pdf_via_docling_has_page_breaks() -> None:
    doc = _parse("docling_multi_page.pdf")
    assert doc.parser == "docling" and doc.format == "pdf" and doc.pages == 5
    assert doc.text.count("\f") == 4
    assert "The Evolution of the Word Processor" in doc.text
    assert doc.parsers_tried == ["docling"]


def test_pdf_with_docx_extension_is_parsed_as_pdf() -> None:
    doc = _parse("derived_fake-memo_pdf-as.docx")
    assert doc.format == "pdf"
    assert "20,000 bottles of water" in doc.text


def test_docx_tables_become_markdown_tables() -> None:
    doc = _parse("unstructured_docx-tables.docx")
    assert doc.parser == "docling"
    assert "| Header Col 1" in doc.text


def test_docx_without_extension() -> None:
    doc = _parse("textract_docx_paragraphs_and_tables")
    assert doc.format == "docx"
    assert "This is the paragraph before the table" in doc.text


def test_pptx_keeps_slide_titles_as_headings() -> None:
    doc = _parse("unstructured_sample-presentation.pptx")
    assert "# This is the first content slide" in doc.text


def test_xlsx_and_csv_tables() -> None:
    assert "| Team" in _parse("unstructured_stanley-cups.xlsx").text
    csv = _parse("docling_csv-comma.csv")
    assert csv.format == "csv" and "| Customer Id" in csv.text


def test_markdown_and_html() -> None:
    assert "# Swimming in the lake" in _parse("docling_duck.md").text
    html = _parse("docling_kvp_data_example.html")
    assert html.format == "html" and "Order Receipt Details" in html.text


def test_cp1252_html_is_decoded_before_docling() -> None:
    doc = _parse("unstructured_fake-html-cp1252.html")
    assert "# My First Heading" in doc.text
    assert "é" in doc.text and "\ufffd" not in doc.text


def test_plain_text_is_returned_directly() -> None:
    data = "Straße\nzweite Zeile\n".encode("utf-16")
    doc = parse_document(data, "notes.txt", ParseSettings())
    assert (doc.parser, doc.format, doc.text) == ("text", "text", "Straße\nzweite Zeile\n")


# --- PDF fallbacks and repair --------------------------------------------------------------


def test_circular_xobjects_skip_docling_and_fall_back_to_pypdfium2() -> None:
    doc = _parse("pdfminer_issue-1113-evil-xobjects.pdf")
    assert doc.parser == "pypdfium2"
    assert "docling" not in doc.parsers_tried
    assert "Hello world" in doc.text
    assert any("circular" in w for w in doc.warnings)


def test_unmapped_glyphs_from_docling_fall_back_to_pypdfium2() -> None:
    settings = ParseSettings(passwords={"*crazyones*": "password"})
    doc = _parse("pypdf_crazyones-encrypted-256.pdf", settings)
    assert doc.parsers_tried[:2] == ["docling", "pypdfium2"]
    assert doc.parser == "pypdfium2"
    assert "The Crazy Ones" in doc.text


def test_garbled_xref_is_repaired() -> None:
    doc = _parse("derived_code_and_formula_xref-garbled.pdf")
    assert "JavaScript Code Example" in doc.text
    assert any(w.startswith("pdf repaired by qpdf") for w in doc.warnings)


def test_truncated_pdf_without_anything_recoverable() -> None:
    data = _read("docling_multi_page.pdf")[:5000]
    with pytest.raises(CorruptDocument, match="truncated: no cross-reference table") as info:
        parse_document(data, "cut.pdf", ParseSettings())
    assert info.value.stage is Stage.PARSE


# --- OCR -----------------------------------------------------------------------------------


def test_ocr_of_image() -> None:
    image = Image.new("L", (900, 160), "white")
    font = ImageFont.load_default(size=48)
    ImageDraw.Draw(image).text((30, 50), "Invoice number 4711 paid", fill="black", font=font)
    png = io.BytesIO()
    image.save(png, format="PNG")
    doc = parse_document(png.getvalue(), "scan.png", ParseSettings())
    assert (doc.parser, doc.format, doc.pages) == ("tesseract", "image", 1)
    assert "Invoice number 4711" in doc.text


def test_ocr_of_image_only_pdf_page() -> None:
    doc = _parse("docling_ocr_test.pdf")
    assert doc.parser == "tesseract"
    assert doc.parsers_tried == ["docling", "pypdfium2", "tesseract"]
    assert "Docling bundles PDF document conversion" in doc.text


def test_ocr_detects_rotated_page() -> None:
    doc = _parse("docling_ocr_test_rotated_90.pdf")
    assert "Docling bundles PDF document conversion" in doc.text
    assert any("rotated" in w for w in doc.warnings)


def test_image_only_pdf_without_ocr_is_empty() -> None:
    with pytest.raises(EmptyDocument, match=r"no text extracted \(tried: docling, pypdfium2\)"):
        _parse("docling_ocr_test.pdf", ParseSettings(ocr=False))


# --- encryption ----------------------------------------------------------------------------


def test_user_password_required() -> None:
    with pytest.raises(PasswordRequired, match="password required"):
        _parse("unstructured_password.pdf")


def test_user_password_supplied() -> None:
    settings = ParseSettings(passwords={"file:///data/unstructured_password.pdf": "password"})
    doc = _parse("unstructured_password.pdf", settings)
    assert "File with password" in doc.text
    assert "pdf decrypted" in doc.warnings


def test_wrong_password() -> None:
    settings = ParseSettings(passwords={"*.pdf": "letmein"})
    with pytest.raises(PasswordRequired, match="wrong password"):
        _parse("unstructured_password.pdf", settings)


def test_empty_user_password_opens_without_configuration() -> None:
    doc = _parse("pypdf_r6-empty-password.pdf")
    assert "pdf encryption test" in doc.text


def test_encrypted_ooxml_needs_password() -> None:
    with pytest.raises(PasswordRequired, match="OLE container"):
        _parse("unstructured_password_protected.xlsx")


# --- broken and empty inputs ---------------------------------------------------------------


def test_truncated_zip() -> None:
    with pytest.raises(CorruptDocument, match="truncated: zip central directory missing"):
        _parse("derived_word_sample_truncated60.docx")


@pytest.mark.parametrize(
    ("data", "name", "reason"),
    [
        (b"", "empty.pdf", "0 bytes"),
        (b" \n\t", "blank.txt", "whitespace only"),
        (" \r\n".encode("utf-16"), "blank16.txt", "whitespace only"),
    ],
)
def test_empty_inputs(data: bytes, name: str, reason: str) -> None:
    with pytest.raises(EmptyDocument, match=reason):
        parse_document(data, name, ParseSettings())


def test_unknown_binary_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormat, match="unsupported format"):
        parse_document(bytes(range(256)) * 16, "blob.dat", ParseSettings())
