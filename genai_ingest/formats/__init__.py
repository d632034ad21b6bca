"""Readers for the formats docling does not open by itself, or not reliably.

Each route turns the document's bytes into bytes docling reads (``prepare``): legacy and
foreign word-processor formats through LibreOffice, Outlook ``.msg`` through extract-msg,
FictionBook through an XML-to-HTML mapping, EPUB into a container docling recognises. Formats
docling reads natively as they are (ODS, ODP, MHTML, e-mail) pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from genai_ingest.formats import ebook, libreoffice, mail


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
    "doc": _office("doc", "docx"),
    "rtf": _office("rtf", "docx"),
    "wri": _office("wri", "docx"),
    "wordperfect": _office("wpd", "docx"),
    "works": _office("wps", "docx"),
    "xls": _office("xls", "xlsx"),
    "ppt": _office("ppt", "pptx"),
    "xlsx_strict": _office("xlsx", "ods"),  # openpyxl cannot read the Strict namespaces
    "ods": Route("ods"),
    "odp": Route("odp"),
    "mhtml": Route("mhtml"),
    "eml": Route("eml"),
    "msg": Route("eml", "extract-msg", lambda data, _timeout: mail.msg_to_eml(data)),
    "epub": Route("epub", "zipfile", lambda data, _timeout: ebook.epub_for_docling(data)),
    "fb2": Route("html", "lxml", lambda data, _timeout: ebook.fb2_to_html(data)),
}


def prepare(data: bytes, fmt: str, timeout_s: float) -> tuple[bytes, str]:
    """Bytes for docling and the docling format they are in."""
    route = ROUTES[fmt]
    converted = route.convert(data, timeout_s) if route.convert else data
    return converted, route.docling_format
