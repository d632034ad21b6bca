"""Office-family files docling cannot read or the sniffer cannot name: LibreOffice tries before
the file is refused (real LibreOffice and docling; files generated with soffice, or public)."""

from __future__ import annotations

import base64
import io
import zipfile

import pytest
from PIL import Image

from genai_ingest.config import ParseSettings
from genai_ingest.failures.errors import UnsupportedFormat
from genai_ingest.parse.document import parse_document
from genai_ingest.parse.sniff import sniff_format
from tests.conftest import fixture_file
from tests.officegen import soffice_convert

RAINFALL_CSV = b"Region,Rainfall,Station\nNorth,112,Aberdeen\nSouth,87,Brighton\n"
REPORT = "The survey counted the birds nesting along the northern shore of the lake in spring."
XML_MARKUP = ("<?xml", "<w:", "<outline", "binData", "<Workbook")


def _parse(data: bytes, name: str):
    parsed = parse_document(data, name, ParseSettings(isolate=False))
    assert not [mark for mark in XML_MARKUP if mark in parsed.text]
    return parsed


def _flat_odt_with_image(text: str) -> bytes:
    """A flat OpenDocument text: a paragraph and an embedded PNG (base64 in the XML)."""
    png = io.BytesIO()
    Image.new("RGB", (64, 64), "navy").save(png, "PNG")
    image = base64.b64encode(png.getvalue()).decode()
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
 xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"
 office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.text">
 <office:body><office:text><text:h>Field report</text:h><text:p>{text}</text:p>
 <text:p><draw:frame svg:width="2cm" svg:height="2cm"><draw:image>
 <office:binary-data>{image}</office:binary-data></draw:image></draw:frame></text:p>
 </office:text></office:body></office:document>""".encode()


def test_word_2003_xml_is_read_by_libreoffice_not_indexed_as_xml() -> None:
    wordml = soffice_convert(_flat_odt_with_image(REPORT), "fodt", "xml:MS Word 2003 XML")
    assert b"<w:binData" in wordml  # the base64 image validation used to refuse
    assert sniff_format(wordml, "report.xml") == "wordml2003"
    parsed = _parse(wordml, "report.xml")
    assert parsed.parsers_tried == ["libreoffice", "docling"]
    assert REPORT in parsed.text


def test_excel_2003_xml_and_excel_97_are_read_as_tables() -> None:
    for target, name, fmt in (
        ("xml:MS Excel 2003 XML", "rain.xml", "spreadsheetml2003"),
        ("xls:MS Excel 97", "rain.xls", "xls"),
    ):
        data = soffice_convert(RAINFALL_CSV, "csv", target)
        parsed = _parse(data, name)
        assert parsed.format == fmt
        assert "Aberdeen" in parsed.text and "112" in parsed.text


def test_a_workbook_docling_cannot_load_is_converted_to_opendocument() -> None:
    xlsx = soffice_convert(RAINFALL_CSV, "csv", "xlsx")
    broken = io.BytesIO()  # a font size openpyxl refuses; LibreOffice shrugs
    with zipfile.ZipFile(io.BytesIO(xlsx)) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/styles.xml":
                data = data.replace(b"<sz val=", b'<sz val="x" v=')
            target.writestr(item.filename, data)
    parsed = _parse(broken.getvalue(), "rain.xlsx")
    assert parsed.parsers_tried == ["docling", "libreoffice"]
    assert any("LibreOffice converted it to OpenDocument" in w for w in parsed.warnings)
    assert "Brighton" in parsed.text


@pytest.mark.parametrize(
    ("name", "fmt", "phrase"),
    [
        ("tika_test-columnar.xlsb", "xlsb", "Square of the Record Number"),
        ("formatcorpus_unc-oxford.ppt", "ppt", "Distributed National Electronic Resource"),
    ],
)
def test_binary_workbooks_and_powerpoint_4_are_named_and_read(
    name: str, fmt: str, phrase: str
) -> None:
    data = fixture_file(name).read_bytes()
    assert sniff_format(data, "no-extension") == fmt
    parsed = _parse(data, name)
    assert parsed.parsers_tried == ["libreoffice", "docling"]
    assert phrase in parsed.text


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("tika_testWordPerfect_42.doc", "Sluwe Sjaantje sloeg de slome slager"),
        ("tika_testEXCEL_4.xls", "Examination Coverage"),
    ],
)
def test_office_files_the_sniffer_cannot_name_are_read_by_their_extension(
    name: str, phrase: str
) -> None:
    data = fixture_file(name).read_bytes()
    assert sniff_format(data, name) == "unknown"
    parsed = _parse(data, name)
    assert phrase in parsed.text
    assert any("read as" in warning for warning in parsed.warnings)


def test_what_libreoffice_cannot_read_either_is_refused_as_unsupported() -> None:
    noise = bytes(range(256)) * 64
    with pytest.raises(UnsupportedFormat, match=r"unrecognised binary .*read as doc"):
        parse_document(noise, "notes.doc", ParseSettings(isolate=False))


def test_opml_outline_becomes_nested_lists() -> None:
    opml = (
        b'<?xml version="1.0"?>\n<opml version="2.0"><head><title>Reading list</title></head>'
        b'<body><outline text="Birds"><outline text="Nesting habits of shore birds"/>'
        b'<outline text="Migration over the North Sea"/></outline>'
        b'<outline title="Lakes &amp; rivers"/></body></opml>'
    )
    assert sniff_format(opml, "list.xml") == "opml"
    parsed = _parse(opml, "list.opml")
    assert parsed.text.startswith("# Reading list")
    assert "- Birds\n    - Nesting habits of shore birds" in parsed.text
    assert "- Lakes & rivers" in parsed.text
