"""Formats and text fidelity: one real file per format, read with its real text, and precise
reasons for what cannot be read (real LibreOffice, docling, extract-msg and Tesseract)."""

from __future__ import annotations

import random
import shutil
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from genai_ingest.config import CleanSettings, ParseSettings, Settings
from genai_ingest.failures.errors import (
    CorruptDocument,
    DeadlineExceeded,
    GarbageContent,
    MissingDependency,
    PasswordRequired,
    UnsupportedFormat,
)
from genai_ingest.parse.document import parse_document
from genai_ingest.parse.ocr import installed_languages
from genai_ingest.parse.sniff import decode_text, sniff_format
from genai_ingest.parse.textlayer import main_script
from genai_ingest.text.clean import clean_text
from tests.conftest import CORPUS, DATA, fixture_file

FORMATS = DATA / "formats"
UDHR = DATA / "corpus" / "good" / "text" / "unstructured_UDHR_first_article_all.txt"
# Raw markup of the container formats: none of it may reach the text.
MARKUP = ("{\\rtf", "\\'", "\\par", "Content-Type:", "=3D", "MIME-Version", "<FictionBook", "<p>")

# (file, sniffed format, parsers tried, a phrase of its real text)
CASES = [
    ("tika_testWORD6.doc", "doc", ["libreoffice", "docling"], "The quick brown fox"),
    ("tika_testEXCEL.xls", "xls", ["libreoffice", "docling"], "Numbers and their Squares"),
    ("tika_testPPT.ppt", "ppt", ["libreoffice", "docling"], "Sample Powerpoint Slide"),
    ("tika_testRTFWord2010CzechCharacters.rtf", "rtf", ["libreoffice", "docling"], "Článek týdne"),
    ("tika_testMSWriteFile.wri", "wri", ["libreoffice", "docling"], "Contribution on DSSSL"),
    ("tika_testWordPerfect.wpd", "wordperfect", ["libreoffice", "docling"], "APPENDIX"),
    ("tika_testWORKS2000.wps", "works", ["libreoffice", "docling"], "Microsoft Works Word"),
    ("tika_testEXCEL.strict.xlsx", "xlsx_strict", ["libreoffice", "docling"], "Test spreadsheet"),
    ("docling_text_document_03.odt", "odt", ["docling"], "Table with rich cells"),
    ("tika_LibreOfficeCalc_ods_1.3.ods", "ods", ["docling"], "example"),
    ("tika_LibreOfficeImpress_odp_1.3.odp", "odp", ["docling"], "An example Impress file"),
    ("tika_testMSG.msg", "msg", ["extract-msg", "docling"], "MIME registry use cases"),
    ("tika_testMSG_chinese.msg", "msg", ["extract-msg", "docling"], "格式測試"),
    ("tika_testThunderbirdEml.eml", "eml", ["docling"], "Dear Vladimir"),
    ("tika_testMHTMLFirefox.mhtml", "mhtml", ["docling"], "a Java framework"),
    ("tika_testEPUB.epub", "epub", ["zipfile", "docling"], "This is the text for chapter One"),
    ("tika_test.fb2", "fb2", ["lxml", "docling"], "ЧАСТЬ ПЕРВАЯ"),
    ("tika_russian.cp866.txt", "text", ["text"], "в студеную зимнюю пору"),
]


def _parse(name: str, settings: ParseSettings | None = None, *, as_name: str = "document"):
    return parse_document(fixture_file(name).read_bytes(), as_name, settings or ParseSettings())


@pytest.mark.parametrize(("name", "fmt", "tried", "phrase"), CASES, ids=[c[0] for c in CASES])
def test_each_format_is_read_with_its_real_text(
    name: str, fmt: str, tried: list[str], phrase: str
) -> None:
    data = fixture_file(name).read_bytes()
    assert sniff_format(data, "no-extension") == fmt  # decided by content, not by name
    parsed = _parse(name)
    assert (parsed.format, parsed.parsers_tried) == (fmt, tried)
    assert phrase in parsed.text
    assert not [mark for mark in MARKUP if mark in parsed.text]


def test_epub_is_recognised_whatever_the_zip_entry_order() -> None:
    data = fixture_file("tika_testEPUB.epub").read_bytes()
    with zipfile.ZipFile(BytesIO(data)) as archive:
        assert archive.namelist()[0] != "mimetype"  # the case docling alone cannot open
    assert sniff_format(data, "book.zip") == "epub"


def test_unreadable_formats_are_named_precisely() -> None:
    mobi = b"Winter Sports".ljust(60, b"\0") + b"BOOKMOBI" + bytes(200)
    with pytest.raises(UnsupportedFormat, match=r"unsupported format: MOBI/Kindle e-book"):
        parse_document(mobi, "book.mobi", ParseSettings())
    truncated = fixture_file("derived_word_sample_truncated60.docx").read_bytes()
    with pytest.raises(CorruptDocument, match="truncated: zip central directory missing"):
        parse_document(truncated[:4000], "cut.docx", ParseSettings())


def test_missing_libreoffice_is_a_replayable_missing_dependency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an environment without soffice
    monkeypatch.delenv("DOCLING_LIBREOFFICE_CMD", raising=False)
    with pytest.raises(MissingDependency, match="LibreOffice") as caught:
        _parse("tika_testWORD6.doc")
    assert caught.value.replayable


def test_a_slow_conversion_is_a_transient_timeout() -> None:
    with pytest.raises(DeadlineExceeded, match="timed out after") as caught:
        _parse("tika_testPPT.ppt", ParseSettings(convert_timeout_s=0.05))  # soffice starts slower
    assert caught.value.replayable


def test_encrypted_legacy_office_needs_and_takes_a_password() -> None:
    name = "tika_testEXCEL_protected_passtika.xls"
    with pytest.raises(PasswordRequired, match="none configured"):
        _parse(name)
    with pytest.raises(PasswordRequired, match="wrong password"):
        _parse(name, ParseSettings(passwords={"*": "guess"}))
    parsed = _parse(name, ParseSettings(passwords={"*": "tika"}))
    assert "This is an Encrypted Excel spreadsheet" in parsed.text
    assert "office document decrypted" in parsed.warnings


# --- encodings -------------------------------------------------------------------------------


def _udhr(language: str) -> str:
    [paragraph] = [
        p for p in UDHR.read_text("utf-8").split("\n\n") if p.startswith(language + "\n")
    ]
    return paragraph


@pytest.mark.parametrize(
    ("language", "encoding"),
    [
        ("Russian", "cp866"),
        ("Russian", "koi8_r"),
        ("Russian", "cp1251"),
        ("Greek (monotonic)", "cp1253"),
        ("Japanese", "shift_jis"),
        ("English", "cp037"),  # EBCDIC
        ("German, Standard (1901)", "cp500"),  # EBCDIC
        ("French", "cp1252"),
    ],
)
def test_legacy_encodings_are_detected(language: str, encoding: str) -> None:
    text = _udhr(language)
    data = text.encode(encoding)
    assert sniff_format(data, "article.txt") == "text"
    assert decode_text(data) == text


def test_text_no_encoding_reads_is_undecodable() -> None:
    rng = random.Random(7)  # words between runs of random high bytes: no encoding fits
    data = b"".join(
        b"word %d " % i + bytes(rng.randrange(0x80, 0x100) for _ in range(5)) + b" "
        for i in range(300)
    )
    with pytest.raises(GarbageContent, match=r"undecodable text \(encoding\?\)"):
        parse_document(data, "notes.txt", ParseSettings())


# --- PDF text layers ---------------------------------------------------------------------------


def test_page_with_a_broken_font_map_is_ocrd_with_a_warning() -> None:
    parsed = _parse("derived_multi_page_broken-tounicode.pdf")
    assert parsed.parser == "tesseract"
    assert "The Evolution of the Word Processor" in parsed.text
    assert any("page 1: text layer unreadable (punctuation noise" in w for w in parsed.warnings)


def test_broken_font_map_without_ocr_is_garbage_not_punctuation() -> None:
    with pytest.raises(GarbageContent, match="text layer unreadable"):
        _parse("derived_multi_page_broken-tounicode.pdf", ParseSettings(ocr=False))


def test_a_short_non_latin_text_layer_is_not_replaced_by_ocr() -> None:
    parsed = _parse("generated_japanese-short-text-layer.pdf")
    assert parsed.text.strip() == "日本語 あいうえお"


def test_ocr_language_follows_the_script_osd_detects() -> None:
    """A Chinese scan: read with an installed Han pack, else the reason names the packs."""
    name = "unstructured_chi_sim_image.jpeg"
    if {"chi_sim", "chi_tra", "jpn"} & installed_languages():
        parsed = _parse(name)
        assert main_script(parsed.text) == "CJK"
        assert any("Han script detected" in warning for warning in parsed.warnings)
    else:
        with pytest.raises(GarbageContent, match="install the Tesseract language pack chi_sim"):
            _parse(name)


def test_xfa_placeholder_is_not_indexed() -> None:
    with pytest.raises(UnsupportedFormat, match="dynamic XFA form"):
        _parse("generated_xfa-placeholder.pdf")


def test_cleaning_removes_non_characters_and_stray_replacement_characters() -> None:
    text = "the com\ufffepiler and\uffff the inter\ufffdpreter \U0010ffff" + " run" * 60
    cleaned = clean_text(text, CleanSettings())
    assert cleaned.startswith("the compiler and the interpreter run")
    assert not {"\ufffe", "\uffff", "\ufffd", "\U0010ffff"} & set(cleaned)


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_run_over_every_format_indexes_each_with_its_real_text(
    tmp_path: Path, settings: Settings
) -> None:
    from flows.ingest import ingest
    from genai_ingest.search.query import search_index

    folder = tmp_path / "docs"
    folder.mkdir()
    for name, *_ in CASES:
        shutil.copy(fixture_file(name), folder / name)
    report = ingest(sources=[str(folder)], settings=settings)
    assert report["documents_failed"] == 0
    assert report["documents_indexed"] + report["documents_duplicate"] == len(CASES)
    for query, name in [
        ("Svitky od Mrtvého moře jsou starověké židovské texty", "tika_testRTFWord2010Czech"),
        ("MIME registry use cases and type detection", "tika_testMSG.msg"),
        ("This is the text for chapter One", "tika_testEPUB.epub"),
        ("document register: contribution on DSSSL", "tika_testMSWriteFile.wri"),
    ]:
        hits = search_index(settings, query, k=5)
        assert any(name in hit.source for hit in hits), (query, [h.source for h in hits])
        assert not [m for hit in hits for m in MARKUP if m in hit.text]


def test_corpus_documents_are_sniffed_as_before() -> None:
    """Every good corpus document keeps a readable format (nothing new is 'unknown')."""
    good = sorted((CORPUS / "good").rglob("*.*")) if CORPUS.exists() else []
    for path in good:
        assert sniff_format(path.read_bytes(), path.name) not in {"unknown", "zip", "ole"}, path
