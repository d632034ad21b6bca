"""Format sniffing and text decoding: content beats the file extension."""

from __future__ import annotations

import codecs
import re
import struct
import zipfile
from io import BytesIO
from pathlib import PurePosixPath

import charset_normalizer
import filetype

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = re.compile(rb"PK\x03\x04")
_ODF_MIMETYPES = {b"application/vnd.oasis.opendocument.text": "odt"}
_OOXML_PARTS = (
    (("word/document.xml",), "docx"),
    (("ppt/presentation.xml", "ppt/slides/"), "pptx"),
    (("xl/workbook.xml", "xl/worksheets/"), "xlsx"),
)
_TEXT_EXTENSIONS = {
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".adoc": "asciidoc",
    ".asciidoc": "asciidoc",
    ".csv": "csv",
    ".eml": "eml",
}
_EMAIL_HEADERS = re.compile(
    rb"^(Received|Return-Path|Delivered-To|MIME-Version|Message-ID|From|To|Subject|Date):",
    re.IGNORECASE | re.MULTILINE,
)
_HTML_START = re.compile(rb"^\s*(<!doctype html|<html[\s>])", re.IGNORECASE)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_LATIN_SINGLE_BYTE = re.compile(r"^(cp125[0-8]|latin_1|iso8859_\d+|mac_\w+)$")
_HIGH_RUN = re.compile(rb"[\x80-\xff]+")
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)


def sniff_format(data: bytes, name: str) -> str:
    """Return the document format, judged by content first and by extension second."""
    head = data[:2048]
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if head.startswith(_OLE_MAGIC):
        return "ooxml_encrypted" if "EncryptedPackage".encode("utf-16-le") in data else "unknown"
    if head.startswith(_ZIP_MAGIC):
        return _sniff_zip(data)
    if _is_image(head):
        return "image"
    if not looks_like_text(data):
        return "unknown"
    return _sniff_text(data, PurePosixPath(name).suffix.lower())


def looks_like_text(data: bytes) -> bool:
    """Whether the bytes decode to text (UTF-8/16/32 or a legacy 8-bit encoding)."""
    sample = data[:65536]
    if not sample:
        return True
    if _bom_encoding(sample) or _nul_pattern_encoding(sample):
        return True
    if b"\x00" in sample:
        return False
    controls = sum(1 for b in sample if b < 32 and b not in b"\t\n\r\f\v\x1b")
    return controls / len(sample) < 0.01


def decode_text(data: bytes) -> str:
    """Decode text bytes: BOMs, BOM-less UTF-16/32, UTF-8 (bad sequences replaced), legacy."""
    if bom := _bom_encoding(data):
        encoding, skip = bom
        return data[skip:].decode(encoding, errors="replace")
    if encoding := _nul_pattern_encoding(data):
        return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if _mostly_utf8(data):
        return data.decode("utf-8", errors="replace")
    return _decode_legacy(data)


def _sniff_zip(data: bytes) -> str:
    names = _zip_member_names(data)
    mimetype = data[38:100] if data[30:38] == b"mimetype" else b""
    if mimetype.startswith(b"application/epub+zip"):
        return "epub"
    for odf_type, fmt in _ODF_MIMETYPES.items():
        if mimetype.startswith(odf_type):
            return fmt
    for markers, fmt in _OOXML_PARTS:
        if any(n.startswith(markers) for n in names):
            return fmt
    return "unknown"


def _zip_member_names(data: bytes) -> set[str]:
    """Member names from the central directory, or from local headers if it is missing."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            return set(archive.namelist())
    except zipfile.BadZipFile:
        pass
    names = set()
    for match in _LOCAL_HEADER.finditer(data):
        start = match.start()
        if start + 30 > len(data):
            break
        name_len = struct.unpack_from("<H", data, start + 26)[0]
        names.add(data[start + 30 : start + 30 + name_len].decode("utf-8", errors="replace"))
    return names


def _is_image(head: bytes) -> bool:
    kind = filetype.guess(head)
    return kind is not None and kind.mime.startswith("image/")


def _sniff_text(data: bytes, suffix: str) -> str:
    if suffix in _TEXT_EXTENSIONS:
        return _TEXT_EXTENSIONS[suffix]
    head = decode_text(data[:4096]).encode("utf-8", errors="replace")
    if _HTML_START.match(head):
        return "html"
    if len(_EMAIL_HEADERS.findall(head)) >= 3:
        return "eml"
    return "text"


def _bom_encoding(data: bytes) -> tuple[str, int] | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding, len(bom)
    return None


def _nul_pattern_encoding(data: bytes) -> str | None:
    """Recognise BOM-less UTF-16/32 by where the NUL bytes sit."""
    sample = data[:4096]
    n = len(sample) - len(sample) % 4
    if n < 8 or b"\x00" not in sample:
        return None
    nul_share = [sample[i:n:4].count(0) / (n // 4) for i in range(4)]
    if nul_share[1] > 0.9 and nul_share[2] > 0.9 and nul_share[3] > 0.9:
        return "utf-32-le"
    if nul_share[0] > 0.9 and nul_share[1] > 0.9 and nul_share[2] > 0.9:
        return "utf-32-be"
    even, odd = (nul_share[0] + nul_share[2]) / 2, (nul_share[1] + nul_share[3]) / 2
    if even > 0.5 and odd < 0.1:
        return "utf-16-be"
    if odd > 0.5 and even < 0.1:
        return "utf-16-le"
    return None


def _mostly_utf8(data: bytes) -> bool:
    """UTF-8 with a few damaged sequences, rather than a legacy 8-bit encoding?

    Valid multibyte sequences are a strong UTF-8 signal. Without any, a legacy encoding is
    likely only if its non-ASCII runs decode to letters (``k\\xf6nnen``), not to symbols.
    """
    valid = len(_UTF8_MULTIBYTE.findall(data))
    runs = _HIGH_RUN.findall(data)
    invalid = len(runs) - valid
    if valid and valid >= invalid:
        return True
    lettered = sum(1 for run in runs if run.decode("cp1252", errors="replace").isalpha())
    return lettered < 0.8 * len(runs)


def _decode_legacy(data: bytes) -> str:
    results = charset_normalizer.from_bytes(data)
    best = results.best()
    if best is None:
        return data.decode("cp1252", errors="replace")
    encoding = best.encoding
    if _LATIN_SINGLE_BYTE.match(encoding) and "cp1252" in {m.encoding for m in results}:
        encoding = "cp1252"
    return data.decode(encoding, errors="replace")
