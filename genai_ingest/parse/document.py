"""Parse stage: bytes of any supported format -> Markdown text, with a fallback chain.

PDF (``genai_ingest.parse.pdf``): decrypt/repair (pikepdf/qpdf) -> docling -> pypdfium2 text per
page -> Tesseract OCR of pages with too little text. Images: Tesseract. Office, HTML, Markdown,
AsciiDoc, CSV: docling.
Legacy Office, RTF, e-mail, e-books, outlines: a converter of ``genai_ingest.parse.formats``, then
docling; when docling cannot read an office file, LibreOffice re-saves it as OpenDocument for
a second try, and an office file the sniffer cannot name is read by its extension.
Plain text: decoded directly. Pages of paged formats are separated by ``\\f``.
"""

from __future__ import annotations

import time
import zipfile
from html.parser import HTMLParser
from io import BytesIO
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageSequence, UnidentifiedImageError

from genai_ingest.config import ParseSettings
from genai_ingest.failures.errors import (
    CorruptDocument,
    EmptyDocument,
    GarbageContent,
    Stage,
    UnsupportedFormat,
)
from genai_ingest.models import ParsedDocument
from genai_ingest.parse import docling_engine, formats
from genai_ingest.parse.deadline import parse_deadline_s
from genai_ingest.parse.docling_engine import (
    PAGE_BREAK,
    ParserFailed,
    Trace,
    page_texts,
    short,
    to_markdown,
)
from genai_ingest.parse.formats import encrypted
from genai_ingest.parse.ocr import ocr_image, unreadable_ocr
from genai_ingest.parse.pdf import parse_pdf
from genai_ingest.parse.sniff import FORMAT_NAMES, decode_text, is_undecodable, sniff_format

if TYPE_CHECKING:
    from docling_core.types.doc import DoclingDocument

_STAGE = Stage.PARSE
_MARKUP_FORMATS = {"html", "markdown", "asciidoc", "csv"}
_CONVERT_SHARE_OF_DEADLINE = 0.8  # of a document's parse deadline; the rest is docling's


def parse_document(
    data: bytes, name: str, settings: ParseSettings, *, uri: str = "", doc_id: str = ""
) -> ParsedDocument:
    """Extract Markdown text from a document; raise a classified ``IngestError`` otherwise."""
    if not data:
        raise EmptyDocument("empty file (0 bytes)", stage=_STAGE)
    fmt = sniff_format(data, name)
    trace = Trace()
    if fmt in encrypted.ENCRYPTABLE and encrypted.is_encrypted(data):
        data = encrypted.decrypt(data, settings.password_for(uri, doc_id))
        trace.warnings.append("office document decrypted")
        fmt = sniff_format(data, name)
    if fmt == "pdf":
        return parse_pdf(data, settings, settings.password_for(uri, doc_id), trace)
    if fmt == "image":
        return _parse_image(data, settings, trace)
    if fmt in formats.ROUTES:
        return _parse_routed(data, fmt, settings, trace)
    if fmt in _MARKUP_FORMATS or fmt == "text":
        return _parse_text_document(data, fmt, settings, trace)
    if fmt in ("unknown", "ole") and (named := formats.by_extension(name)):
        return _parse_by_extension(data, name, fmt, named, settings, trace)
    raise _unreadable_format(data, name, fmt)


def _parse_by_extension(
    data: bytes, name: str, fmt: str, named: str, settings: ParseSettings, trace: Trace
) -> ParsedDocument:
    """A file whose bytes the sniffer cannot name, read as the office format its extension
    names (LibreOffice knows more legacy formats than the sniffer); refused if that fails."""
    trace.warnings.append(f"format not recognised from its bytes: read as {named} (extension)")
    try:
        return _parse_routed(data, named, settings, trace)
    except (CorruptDocument, EmptyDocument) as exc:
        raise _unreadable_format(data, name, fmt, f"; read as {named}: {exc.reason}") from None


def _unreadable_format(data: bytes, name: str, fmt: str, tried: str = "") -> Exception:
    """The precise reason a format sniffed from the bytes cannot be read."""
    if fmt == "zip_truncated":
        return CorruptDocument(
            "truncated: zip central directory missing (an Office, OpenDocument or EPUB file "
            "cut short?)",
            stage=_STAGE,
        )
    if fmt == "ole_corrupt":
        return CorruptDocument(
            "damaged OLE2 compound file (legacy Office or Outlook): its directory is unreadable",
            stage=_STAGE,
        )
    described = FORMAT_NAMES.get(fmt) or _describe_binary(data, name)
    return UnsupportedFormat(f"unsupported format: {described}{tried}", stage=_STAGE)


def _parse_image(data: bytes, settings: ParseSettings, trace: Trace) -> ParsedDocument:
    if not settings.ocr:
        raise EmptyDocument("image without text layer and OCR disabled", stage=_STAGE)
    trace.attempt("tesseract")
    try:
        image = Image.open(BytesIO(data))
        frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CorruptDocument(f"image cannot be decoded: {short(exc)}", stage=_STAGE) from None
    frames = frames[: settings.max_pages]
    texts = [ocr_image(f, settings, trace, f"page {i + 1}") for i, f in enumerate(frames)]
    if not any(text.strip() for text in texts):
        raise unreadable_ocr(trace, settings) or EmptyDocument(
            "no text extracted (tried: tesseract)", stage=_STAGE
        )
    return ParsedDocument(
        text=PAGE_BREAK.join(texts),
        parser="tesseract",
        format="image",
        parsers_tried=trace.tried,
        pages=len(frames),
        warnings=trace.warnings,
    )


def _paged_markdown(document: DoclingDocument) -> str:
    """Markdown with one ``\\f`` per page boundary (PPTX slides, XLSX sheets), so chunks can
    cite page numbers; formats without pages (DOCX, ODT, EPUB) come out as one page."""
    pages = document.num_pages()
    if not pages:
        return to_markdown(document)
    return PAGE_BREAK.join(page_texts(document, pages))


def _parse_routed(data: bytes, fmt: str, settings: ParseSettings, trace: Trace) -> ParsedDocument:
    """A format docling reads as is or after a converter of ``genai_ingest.parse.formats``; if
    docling cannot read the result, LibreOffice converts the original to OpenDocument and
    docling tries that, all within the document's parse deadline."""
    if data.startswith(b"PK\x03\x04"):
        _check_zip(data)
    # Converters must end before the parse deadline kills this worker (and orphans soffice).
    budget_ends = time.monotonic() + parse_deadline_s(data, settings) * _CONVERT_SHARE_OF_DEADLINE
    try:
        return _docling_by_route(data, fmt, formats.ROUTES[fmt], settings, trace, budget_ends)
    except _DoclingCannotRead as exc:
        retry = formats.LIBREOFFICE_RETRY.get(fmt)
        if retry is None:
            raise exc.error from None
        trace.warnings.append(f"{exc.error.reason}: LibreOffice converted it to OpenDocument")
        try:
            return _docling_by_route(data, fmt, retry, settings, trace, budget_ends)
        except _DoclingCannotRead as again:
            raise again.error from None


class _DoclingCannotRead(Exception):
    """docling failed on, or found no text in, what a route gave it."""

    def __init__(self, error: CorruptDocument | EmptyDocument) -> None:
        self.error = error


def _docling_by_route(
    data: bytes,
    fmt: str,
    route: formats.Route,
    settings: ParseSettings,
    trace: Trace,
    budget_ends: float,
) -> ParsedDocument:
    if route.tool:
        trace.attempt(route.tool)
    budget = budget_ends - time.monotonic()
    converted, docling_format = formats.prepare(
        route, data, min(settings.convert_timeout_s, budget)
    )
    trace.attempt("docling")
    try:
        document = docling_engine.docling_convert(converted, docling_format, settings)
    except ParserFailed as exc:
        name = FORMAT_NAMES.get(fmt, fmt)
        reason = f"{name} cannot be parsed: {exc}"
        raise _DoclingCannotRead(CorruptDocument(reason, stage=_STAGE)) from None
    text = _paged_markdown(document)
    if not text.strip():
        reason = f"no text extracted (tried: {', '.join(trace.tried)})"
        raise _DoclingCannotRead(EmptyDocument(reason, stage=_STAGE))
    return _docling_result(document, text, fmt, trace)


def _check_zip(data: bytes) -> None:
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            damaged = archive.testzip()
    except zipfile.BadZipFile as exc:
        if b"PK\x05\x06" not in data[-65557:]:
            raise CorruptDocument(
                "truncated: zip central directory missing", stage=_STAGE
            ) from None
        raise CorruptDocument(f"corrupt zip container: {exc}", stage=_STAGE) from None
    if damaged:
        raise CorruptDocument(f"corrupt zip member: {damaged}", stage=_STAGE)


def _parse_text_document(
    data: bytes, fmt: str, settings: ParseSettings, trace: Trace
) -> ParsedDocument:
    text = decode_text(data)
    if not text.strip():
        raise EmptyDocument("no text: whitespace only", stage=_STAGE)
    if is_undecodable(text):
        raise GarbageContent(
            "undecodable text (encoding?): no known encoding reads these bytes as text",
            stage=_STAGE,
        )
    if fmt == "text":
        trace.attempt("text")
        return ParsedDocument(text=text, parser="text", format=fmt, parsers_tried=trace.tried)
    trace.attempt("docling")
    try:
        document = docling_engine.docling_convert(_docling_text_bytes(text, fmt), fmt, settings)
        markdown = to_markdown(document)
    except ParserFailed as exc:
        trace.warnings.append(f"docling failed: {exc}")
    else:
        if markdown.strip():
            return _docling_result(document, markdown, fmt, trace)
        trace.warnings.append("docling returned no text")
    trace.attempt("text")
    fallback = _html_text(text) if fmt == "html" else text
    if not fallback.strip():
        raise EmptyDocument(f"no text extracted (tried: {', '.join(trace.tried)})", stage=_STAGE)
    return ParsedDocument(
        text=fallback, parser="text", format=fmt, parsers_tried=trace.tried, warnings=trace.warnings
    )


def _docling_text_bytes(text: str, fmt: str) -> bytes:
    """UTF-8 for docling; HTML gets a BOM so a stale ``<meta charset>`` cannot win."""
    encoded = text.encode("utf-8")
    return b"\xef\xbb\xbf" + encoded if fmt == "html" else encoded


class _TextOfHtml(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "noscript"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._skipping += tag in self._SKIP

    def handle_endtag(self, tag: str) -> None:
        self._skipping -= tag in self._SKIP and self._skipping > 0

    def handle_data(self, data: str) -> None:
        if not self._skipping and data.strip():
            self.parts.append(data.strip())


def _html_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    return "\n\n".join(parser.parts)


def _docling_result(document: DoclingDocument, text: str, fmt: str, trace: Trace) -> ParsedDocument:
    title = _docling_title(document)
    return ParsedDocument(
        text=text,
        parser="docling",
        format=fmt,
        parsers_tried=trace.tried,
        pages=document.num_pages() or None,
        warnings=trace.warnings,
        metadata={"title": title} if title else {},
    )


def _docling_title(document: DoclingDocument) -> str | None:
    from docling_core.types.doc import DocItemLabel, TextItem

    for item, _level in document.iterate_items():
        if isinstance(item, TextItem) and item.label == DocItemLabel.TITLE and item.text.strip():
            return item.text.strip()
    return None


def _describe_binary(data: bytes, name: str) -> str:
    import filetype

    kind = filetype.guess(data[:8192])
    detected = kind.mime if kind else "unrecognised binary"
    return f"{detected} ({name or 'no name'}, {len(data)} bytes)"
