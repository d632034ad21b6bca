"""Readers for the formats docling does not open by itself, or not reliably.

Each route turns the document's bytes into bytes docling reads (``prepare``): legacy and
foreign office formats (Word 1-2003, Excel 4-2003 and binary workbooks, PowerPoint 4-2003,
Word/Excel 2003 XML, WordPerfect, Works, Write) through LibreOffice, Outlook ``.msg`` through
extract-msg, FictionBook and OPML through XML-to-HTML mappings, EPUB into a container docling
recognises. Formats docling reads natively (OOXML, OpenDocument, MHTML, e-mail) pass through
unchanged.

When docling cannot read what a route gives it, ``LIBREOFFICE_RETRY`` names a second route:
LibreOffice re-saves the original as OpenDocument, which docling reads by another backend. A
file the sniffer cannot name is read by the route its extension names (``by_extension``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from genai_ingest.parse.formats import ebook, libreoffice, mail, outline


@dataclass(frozen=True)
class Route:
    """How one format reaches docling: ``tool`` converts it (None: docling reads it as is)
    into ``docling_format``."""

    docling_format: str
    tool: str | None = None
    convert: Callable[[bytes, float], bytes] | None = None


def _office(source: str, target: str) -> Route:
    return Route(
        target,
        "libreoffice",
        lambda data, timeout_s: libreoffice.convert(data, source, target, timeout_s),
    )


ROUTES: dict[str, Route] = {
    "docx": Route("docx"),
    "pptx": Route("pptx"),
    "xlsx": Route("xlsx"),
    "odt": Route("odt"),
    "doc": _office("doc", "docx"),
    "rtf": _office("rtf", "docx"),
    "wri": _office("wri", "docx"),
    "wordperfect": _office("wpd", "docx"),
    "works": _office("wps", "docx"),
    "xls": _office("xls", "xlsx"),
    "ppt": _office("ppt", "pptx"),
    "xlsx_strict": _office("xlsx", "ods"),  # openpyxl cannot read the Strict namespaces
    "xlsb": _office("xlsb", "xlsx"),
    "wordml2003": _office("xml", "docx"),
    "spreadsheetml2003": _office("xml", "xlsx"),
    "ods": Route("ods"),
    "odp": Route("odp"),
    "mhtml": Route("mhtml"),
    "eml": Route("eml"),
    "msg": Route("eml", "extract-msg", lambda data, _timeout: mail.msg_to_eml(data)),
    "epub": Route("epub", "zipfile", lambda data, _timeout: ebook.epub_for_docling(data)),
    "fb2": Route("html", "lxml", lambda data, _timeout: ebook.fb2_to_html(data)),
    "opml": Route("html", "lxml", lambda data, _timeout: outline.opml_to_html(data)),
}

_WRITER = ("doc", "rtf", "wri", "wordperfect", "works", "wordml2003", "docx")
_CALC = ("xls", "xlsb", "spreadsheetml2003", "xlsx")
_SUFFIXES = {"wordperfect": "wpd", "works": "wps", "wordml2003": "xml", "spreadsheetml2003": "xml"}
#: format -> the LibreOffice route to OpenDocument, tried when docling cannot read the first.
LIBREOFFICE_RETRY: dict[str, Route] = {
    **{fmt: _office(_SUFFIXES.get(fmt, fmt), "odt") for fmt in _WRITER},
    **{fmt: _office(_SUFFIXES.get(fmt, fmt), "ods") for fmt in _CALC},
    **{fmt: _office(fmt, "odp") for fmt in ("ppt", "pptx")},
}
#: file extension -> format, for office files whose bytes the sniffer cannot name (Word for
#: Windows 1-2, Excel 2-4 BIFF, WordPerfect 4, PowerPoint for Mac 3-4 ...).
_EXTENSION_FORMATS = {
    **dict.fromkeys((".doc", ".dot"), "doc"),
    **dict.fromkeys((".xls", ".xlt", ".xlw"), "xls"),
    **dict.fromkeys((".ppt", ".pps", ".pot"), "ppt"),
    ".xlsb": "xlsb",
    ".wpd": "wordperfect",
    ".wps": "works",
    ".wri": "wri",
}


def by_extension(name: str) -> str | None:
    """The office format a file's extension names, if any."""
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    return _EXTENSION_FORMATS.get(suffix)


def prepare(route: Route, data: bytes, timeout_s: float) -> tuple[bytes, str]:
    """Bytes for docling and the docling format they are in."""
    converted = route.convert(data, timeout_s) if route.convert else data
    return converted, route.docling_format
