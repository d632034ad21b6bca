"""Format sniffing and text decoding: content beats the file extension.

``sniff_format`` names every format by its bytes: OLE2 compound files by their streams
(``olefile``), ZIP containers by their members (EPUB by ``META-INF/container.xml``, not by
entry order), text formats by their first bytes (RTF, FictionBook, MHTML, e-mail, HTML).
``FORMAT_NAMES`` holds the human names used in reasons, e.g. ``unsupported format: MOBI``.
"""

from __future__ import annotations

import codecs
import re
import struct
import zipfile
from io import BytesIO
from pathlib import PurePosixPath

import charset_normalizer
import filetype
import olefile

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = re.compile(rb"PK\x03\x04")
_ODF_MIMETYPES = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/vnd.oasis.opendocument.graphics": "odg",
    "application/epub+zip": "epub",
}
_OOXML_PARTS = (
    (("word/document.xml",), "docx"),
    (("ppt/presentation.xml", "ppt/slides/"), "pptx"),
    (("xl/workbook.bin",), "xlsb"),
    (("xl/workbook.xml", "xl/worksheets/"), "xlsx"),
)
_STRICT_SPREADSHEET = b"http://purl.oclc.org/ooxml/spreadsheetml/main"
# OLE2 stream (top level, lower case) -> format; the first stream found decides.
_OLE_STREAMS = (
    ("encryptedpackage", "ooxml_encrypted"),
    ("worddocument", "doc"),
    ("workbook", "xls"),
    ("book", "xls"),
    ("powerpoint document", "ppt"),
    ("pp40", "ppt"),  # PowerPoint 3/4 for Mac: LibreOffice reads it as .ppt
    ("__properties_version1.0", "msg"),
    ("contents", "works"),  # Microsoft Works word processor (.wps)
    ("visiodocument", "visio"),
    ("quill", "publisher"),
)
_TEXT_EXTENSIONS = {
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".mht": "mhtml",
    ".mhtml": "mhtml",
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
_MHTML = re.compile(rb"^Content-Type:\s*multipart/related", re.IGNORECASE | re.MULTILINE)
_HTML_START = re.compile(rb"^\s*(<!doctype html|<html[\s>])", re.IGNORECASE)
_RTF_START = re.compile(rb"^\s*\{\\rtf")
_FICTIONBOOK = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<FictionBook[\s>]", re.DOTALL)
#: The root element's name, after the XML declaration, comments, PIs and a DOCTYPE.
_XML_ROOT = re.compile(rb"^\s*(?:<(?:\?.*?\?|!--.*?--|![^>]*)>\s*)*<([\w:.-]+)", re.DOTALL)
#: XML root element -> format (Word and Excel 2003 XML, OPML outlines).
_XML_ROOTS = {
    b"w:wordDocument": "wordml2003",
    b"Workbook": "spreadsheetml2003",
    b"ss:Workbook": "spreadsheetml2003",
    b"opml": "opml",
}
#: Word for Windows 1.x and 2.0 (not OLE): the FIB's wIdent.
_WORD_1_2_MAGIC = (b"\x9b\xa5", b"\xdb\xa5")

FORMAT_NAMES = {
    "doc": "Microsoft Word 97-2003 (.doc)",
    "xls": "Microsoft Excel 97-2003 (.xls)",
    "ppt": "Microsoft PowerPoint 97-2003 (.ppt)",
    "msg": "Outlook message (.msg)",
    "works": "Microsoft Works document (.wps)",
    "wri": "Microsoft Write (.wri)",
    "wordperfect": "WordPerfect document",
    "rtf": "Rich Text Format",
    "xlsx_strict": "Strict Office Open XML workbook",
    "xlsb": "Excel binary workbook (.xlsb)",
    "wordml2003": "Word 2003 XML document",
    "spreadsheetml2003": "Excel 2003 XML spreadsheet",
    "opml": "OPML outline",
    "fb2": "FictionBook (.fb2)",
    "mhtml": "MHTML web archive",
    "mobi": "MOBI/Kindle e-book (convert it to EPUB)",
    "visio": "Microsoft Visio drawing",
    "publisher": "Microsoft Publisher document",
    "odg": "OpenDocument drawing",
    "ole": "OLE2 compound file of no known document type",
    "zip": "ZIP archive without a known document inside",
}

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_LATIN_SINGLE_BYTE = re.compile(r"^(cp125[0-8]|latin_1|iso8859_\d+|mac_\w+)$")
# EBCDIC text: space is 0x40, letters 0x81-0xE9, digits 0xF0-0xF9; ASCII-range bytes are rare.
_EBCDIC = "cp037"
_EBCDIC_TEXT_BYTES = (
    frozenset((0x40, 0x4B, 0x4D, 0x5D, 0x6B, 0x7A, 0x7D, 0x7F, 0x15, 0x25, 0x0D))
    .union(*(range(a, b) for a, b in ((0x81, 0x8A), (0x91, 0x9A), (0xA2, 0xAA), (0xC1, 0xCA))))
    .union(*(range(a, b) for a, b in ((0xD1, 0xDA), (0xE2, 0xEA), (0xF0, 0xFA))))
)
_UNDECODABLE_SHARE = 0.05
_CHAOS_SLACK = 0.05
_LEGACY_LETTER_SHARE = 0.8
_UTF8_DAMAGE_SHARE = 0.1


def sniff_format(data: bytes, name: str) -> str:
    """Return the document format, judged by content first and by extension second."""
    head = data[:2048]
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if head.startswith(_OLE_MAGIC):
        return _sniff_ole(data)
    if head.startswith(_ZIP_MAGIC):
        return _sniff_zip(data)
    if binary := _sniff_binary_document(head):
        return binary
    if _is_image(head):
        return "image"
    if not looks_like_text(data):
        return "unknown"
    return _sniff_text(data, PurePosixPath(name).suffix.lower())


def looks_like_text(data: bytes) -> bool:
    """Whether the bytes decode to text (UTF-8/16/32, a legacy 8-bit encoding or EBCDIC)."""
    sample = data[:65536]
    if not sample:
        return True
    if _bom_encoding(sample) or _nul_pattern_encoding(sample) or _looks_like_ebcdic(sample):
        return True
    if b"\x00" in sample:
        return False
    controls = sum(1 for b in sample if b < 32 and b not in b"\t\n\r\f\v\x1b")
    return controls / len(sample) < 0.01


def decode_text(data: bytes) -> str:
    """Decode text bytes: BOMs, BOM-less UTF-16/32, UTF-8 (bad sequences replaced), legacy
    8-bit encodings (Cyrillic, Greek, CJK, ... as charset-normalizer detects them), EBCDIC."""
    if bom := _bom_encoding(data):
        encoding, skip = bom
        return data[skip:].decode(encoding, errors="replace")
    if encoding := _nul_pattern_encoding(data):
        return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if _looks_like_ebcdic(data[:65536]):
        return data.decode(_EBCDIC, errors="replace")
    legacy = _legacy_encoding(data)
    if legacy is None or _mostly_utf8(data, legacy):
        return data.decode("utf-8", errors="replace")
    return data.decode(legacy, errors="replace")


def undecodable_share(text: str) -> float:
    """Share of U+FFFD among the visible characters of decoded text."""
    visible = sum(1 for char in text[:200_000] if not char.isspace())
    return text[:200_000].count("\ufffd") / visible if visible else 0.0


def is_undecodable(text: str) -> bool:
    """Whether no encoding fits: too many bytes ended up as U+FFFD."""
    return undecodable_share(text) > _UNDECODABLE_SHARE


# --- containers and binary formats ---------------------------------------------------------


def _sniff_ole(data: bytes) -> str:
    """OLE2 compound files (Word, Excel, PowerPoint, Outlook, Works, ...) by their streams."""
    try:
        with olefile.OleFileIO(data) as ole:
            streams = {entry[0].lower() for entry in ole.listdir(streams=True, storages=True)}
    except (OSError, ValueError, IndexError, struct.error):  # olefile's errors for damage
        return "ole_corrupt"
    for stream, fmt in _OLE_STREAMS:
        if stream in streams:
            return fmt
    return "ole"


def _sniff_zip(data: bytes) -> str:
    names, complete = _zip_member_names(data)
    mimetype = _zip_mimetype(data, complete)
    if "META-INF/container.xml" in names and (
        mimetype in ("", "application/epub+zip") or any(n.endswith(".opf") for n in names)
    ):
        return "epub"
    if mimetype in _ODF_MIMETYPES:
        return _ODF_MIMETYPES[mimetype]
    for markers, fmt in _OOXML_PARTS:
        if any(n.startswith(markers) for n in names):
            if fmt == "xlsx" and complete and _is_strict_workbook(data):
                return "xlsx_strict"
            return fmt
    return "zip" if complete else "zip_truncated"


def _zip_member_names(data: bytes) -> tuple[set[str], bool]:
    """Member names from the central directory (complete: True), or from local headers if
    the central directory is missing (a truncated file)."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            return set(archive.namelist()), True
    except zipfile.BadZipFile:
        pass
    names = set()
    for match in _LOCAL_HEADER.finditer(data):
        start = match.start()
        if start + 30 > len(data):
            break
        name_len = struct.unpack_from("<H", data, start + 26)[0]
        names.add(data[start + 30 : start + 30 + name_len].decode("utf-8", errors="replace"))
    return names, False


def _zip_mimetype(data: bytes, complete: bool) -> str:
    """The ``mimetype`` member of ODF/EPUB containers, wherever it sits in the archive."""
    if complete:
        try:
            with zipfile.ZipFile(BytesIO(data)) as archive:
                if archive.getinfo("mimetype").file_size <= 200:
                    return archive.read("mimetype").decode("ascii", "replace").strip()
        except (KeyError, zipfile.BadZipFile, OSError, RuntimeError):
            return ""
        return ""
    if data[30:38] == b"mimetype":
        return data[38:120].split(b"PK", 1)[0].decode("ascii", "replace").strip()
    return ""


def _is_strict_workbook(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            return _STRICT_SPREADSHEET in archive.read("xl/workbook.xml")[:4096]
    except (KeyError, zipfile.BadZipFile, OSError, RuntimeError):
        return False


def _sniff_binary_document(head: bytes) -> str | None:
    if head[60:68] in (b"BOOKMOBI", b"TEXtREAd"):
        return "mobi"
    if head.startswith(b"\xffWPC"):
        return "wordperfect"
    if head[:2] in (b"\x31\xbe", b"\x32\xbe") and head[2:4] == b"\x00\x00":
        return "wri"
    if head[:2] in _WORD_1_2_MAGIC and head[3] == 0:
        return "doc"
    return None


def _is_image(head: bytes) -> bool:
    kind = filetype.guess(head)
    return kind is not None and kind.mime.startswith("image/")


def _sniff_text(data: bytes, suffix: str) -> str:
    head = decode_text(data[:4096]).encode("utf-8", errors="replace")
    if _RTF_START.match(head):
        return "rtf"
    if _FICTIONBOOK.match(head):
        return "fb2"
    if (root := _XML_ROOT.match(head)) and root.group(1) in _XML_ROOTS:
        return _XML_ROOTS[root.group(1)]
    if _MHTML.search(head) and _EMAIL_HEADERS.search(head):
        return "mhtml"
    if suffix in _TEXT_EXTENSIONS:
        return _TEXT_EXTENSIONS[suffix]
    if _HTML_START.match(head):
        return "html"
    if len(_EMAIL_HEADERS.findall(head)) >= 3:
        return "eml"
    return "text"


# --- encodings -----------------------------------------------------------------------------


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


def _looks_like_ebcdic(sample: bytes) -> bool:
    """EBCDIC text: many 0x40 spaces, nearly every byte a letter, digit or punctuation."""
    if len(sample) < 16 or sample.count(0x40) < 0.08 * len(sample):
        return False
    return sum(1 for b in sample if b in _EBCDIC_TEXT_BYTES) > 0.9 * len(sample)


def _legacy_encoding(data: bytes) -> str | None:
    """The 8-bit (or CJK multibyte) encoding charset-normalizer finds most coherent among its
    least chaotic candidates (KOI8-R rather than Shift-JIS for Russian)."""
    results = list(charset_normalizer.from_bytes(data[:200_000]))
    if not results:
        return None
    least_chaos = min(match.chaos for match in results)
    calm = [match for match in results if match.chaos <= least_chaos + _CHAOS_SLACK]
    encoding = max(calm, key=lambda match: match.coherence).encoding
    if _LATIN_SINGLE_BYTE.match(encoding) and "cp1252" in {m.encoding for m in results}:
        encoding = "cp1252"
    return encoding


def _mostly_utf8(data: bytes, legacy: str) -> bool:
    """UTF-8 with a few damaged sequences, rather than text in the ``legacy`` encoding?

    Mostly valid multibyte sequences are a strong UTF-8 signal. Otherwise the legacy encoding is
    likely only if its non-ASCII characters are letters (``k\\xf6nnen``, Cyrillic in
    CP866/KOI8-R, kana and kanji in Shift-JIS), not symbols.
    """
    utf8 = data.decode("utf-8", errors="replace")
    damaged = utf8.count("\ufffd")
    if damaged <= _UTF8_DAMAGE_SHARE * sum(1 for char in utf8 if ord(char) > 127):
        return True
    non_ascii = [char for char in data.decode(legacy, errors="replace") if ord(char) > 127]
    letters = sum(1 for char in non_ascii if char.isalpha())
    return letters < _LEGACY_LETTER_SHARE * len(non_ascii)
