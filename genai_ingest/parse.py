"""Parse stage: bytes of any supported format -> Markdown text, with a fallback chain.

PDF: decrypt/repair (pikepdf/qpdf) -> docling -> pypdfium2 text per page -> Tesseract OCR of
pages with too little text. Images: Tesseract. Office, HTML, Markdown, AsciiDoc, CSV: docling.
Legacy Office, RTF, e-mail, e-books: a converter of ``genai_ingest.formats``, then docling.
Plain text: decoded directly. Pages of paged formats are separated by ``\\f``.
"""

from __future__ import annotations

import functools
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from io import BytesIO
from typing import TYPE_CHECKING, Any

import pikepdf
import pypdfium2
from PIL import Image, ImageSequence, UnidentifiedImageError

from genai_ingest import formats
from genai_ingest.config import ParseSettings
from genai_ingest.errors import (
    CorruptDocument,
    EmptyDocument,
    GarbageContent,
    MissingDependency,
    PasswordRequired,
    Stage,
    UnsupportedFormat,
)
from genai_ingest.formats import encrypted, libreoffice
from genai_ingest.models import ParsedDocument
from genai_ingest.ocr import OcrLog, ocr_image, unreadable_ocr
from genai_ingest.sniff import FORMAT_NAMES, decode_text, is_undecodable, sniff_format
from genai_ingest.textlayer import broken_reason, main_script

if TYPE_CHECKING:
    from docling.document_converter import DocumentConverter
    from docling_core.types.doc import DoclingDocument

PAGE_BREAK = "\f"
_STAGE = Stage.PARSE
# docling-parse and pdfium keep process-global state: one conversion or render at a time.
_ENGINE_LOCK = threading.RLock()
_DOCLING_EXTENSIONS = {
    "pdf": "pdf",
    "docx": "docx",
    "pptx": "pptx",
    "xlsx": "xlsx",
    "odt": "odt",
    "ods": "ods",
    "odp": "odp",
    "epub": "epub",
    "html": "html",
    "mhtml": "mhtml",
    "markdown": "md",
    "asciidoc": "asciidoc",
    "csv": "csv",
    "eml": "eml",
}
_ZIP_FORMATS = {"docx", "pptx", "xlsx", "odt"}
_MARKUP_FORMATS = {"html", "markdown", "asciidoc", "csv"}
_MAX_XOBJECT_DEPTH = 64
_CONVERT_SHARE_OF_DEADLINE = 0.8  # of a document's parse deadline; the rest is docling's
_MAX_UNMAPPED_SHARE = 0.05  # a page with more U+FFFD than this goes to the next parser
# Adobe's notice in dynamic XFA forms, shown by viewers that cannot render XFA; a page with
# it holds nothing else (the notice, a link to Adobe Reader, trademark lines).
_XFA_PLACEHOLDER = re.compile(
    r"If\s+this\s+message\s+is\s+not\s+eventually\s+replaced\s+by\s+the\s+proper\s+"
    r"contents\s+of\s+the\s+document,\s+your\s+PDF\s+viewer\s+may\s+not\s+be\s+able",
    re.IGNORECASE,
)
_QPDF_NOISE = re.compile(
    r"^.*?<_io\.BytesIO object at 0x[0-9a-f]+>(?: \(offset \d+\))?:?|file is damaged"
)


class _ParserFailed(Exception):
    """One parser of the chain produced nothing usable; the next one is tried."""


@dataclass
class _Trace(OcrLog):
    """Which parsers ran and what went wrong along the way (OCR's notes included)."""

    tried: list[str] = field(default_factory=list)

    def attempt(self, parser: str) -> None:
        if parser not in self.tried:
            self.tried.append(parser)


@dataclass
class _PdfSource:
    """A PDF ready for the parsers: plain (decrypted, maybe repaired) bytes and facts."""

    data: bytes
    pages: int | None = None
    title: str | None = None
    damage: str | None = None
    cyclic_xobjects: bool = False
    xfa: bool = False
    xfa_placeholder: bool = False


@dataclass
class _Pages:
    """Text per page and the parser each page's text came from."""

    texts: list[str]
    sources: list[str | None]
    broken: dict[int, str] = field(default_factory=dict)  # page index -> why text was refused

    def sparse(self, min_chars: int) -> list[int]:
        """Pages with too little text, or with many unmapped glyphs (fonts without a Unicode
        map come out as U+FFFD): both are worth another parser or OCR."""
        return [
            i
            for i, text in enumerate(self.texts)
            if _useful_chars(text) < min_chars or _unmapped_share(text) > _MAX_UNMAPPED_SHARE
        ]

    def offer(self, index: int, text: str, parser: str) -> None:
        """Keep ``text`` for the page if it reads as text (not a broken font map) and has more
        useful characters than what the page has. OCR never replaces a text layer in another
        script (English OCR of a Japanese page is noise, however long)."""
        if reason := broken_reason(text):
            self.broken.setdefault(index, reason)
            return
        current = self.texts[index]
        if parser == "tesseract" and current.strip() and main_script(text) != main_script(current):
            return
        if _useful_chars(text) > _useful_chars(current):
            self.texts[index] = text.strip()
            self.sources[index] = parser

    def broken_warnings(self) -> list[str]:
        """One warning per page whose text layer was refused and not replaced by a parser."""
        return [
            f"page {index + 1}: text layer unreadable ({reason}): "
            + ("OCR'd" if self.sources[index] == "tesseract" else "page dropped")
            for index, reason in sorted(self.broken.items())
            if self.sources[index] in (None, "tesseract")
        ]

    def parser(self) -> str:
        used = [p for p in ("docling", "pypdfium2", "tesseract") if p in self.sources]
        return "+".join(used)


def parse_document(
    data: bytes, name: str, settings: ParseSettings, *, uri: str = "", doc_id: str = ""
) -> ParsedDocument:
    """Extract Markdown text from a document; raise a classified ``IngestError`` otherwise."""
    if not data:
        raise EmptyDocument("empty file (0 bytes)", stage=_STAGE)
    fmt = sniff_format(data, name)
    trace = _Trace()
    if fmt in encrypted.ENCRYPTABLE and encrypted.is_encrypted(data):
        data = encrypted.decrypt(data, settings.password_for(uri, doc_id))
        trace.warnings.append("office document decrypted")
        fmt = sniff_format(data, name)
    if fmt == "pdf":
        return _parse_pdf(data, settings, settings.password_for(uri, doc_id), trace)
    if fmt == "image":
        return _parse_image(data, settings, trace)
    if fmt in _ZIP_FORMATS:
        return _parse_zip_document(data, fmt, settings, trace)
    if fmt in formats.ROUTES:
        return _parse_routed(data, fmt, settings, trace)
    if fmt in _MARKUP_FORMATS or fmt == "text":
        return _parse_text_document(data, fmt, settings, trace)
    raise _unreadable_format(data, name, fmt)


def _unreadable_format(data: bytes, name: str, fmt: str) -> Exception:
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
    return UnsupportedFormat(f"unsupported format: {described}", stage=_STAGE)


# --- PDF ---------------------------------------------------------------------------------


def _parse_pdf(
    data: bytes, settings: ParseSettings, password: str | None, trace: _Trace
) -> ParsedDocument:
    source = _prepare_pdf(data, password, trace)
    page_count = source.pages or _pdfium_page_count(source)
    if page_count > settings.max_pages:
        trace.warnings.append(f"only the first {settings.max_pages} of {page_count} pages read")
    pages = _Pages(
        [""] * min(page_count, settings.max_pages), [None] * min(page_count, settings.max_pages)
    )
    _docling_pdf_pages(source, pages, settings, trace)
    min_chars = settings.ocr_min_chars_per_page
    if sparse := pages.sparse(min_chars):
        _pdfium_text_pages(source, pages, sparse, trace)
    if settings.ocr and (sparse := pages.sparse(min_chars)):
        _ocr_pdf_pages(source, pages, sparse, settings, trace)
    trace.warnings.extend(pages.broken_warnings())
    _drop_xfa_placeholder(source, pages, trace)
    if not any(_useful_chars(text) for text in pages.texts):
        raise _nothing_from_pdf(source, trace, settings, pages)
    metadata = {"title": source.title} if source.title else {}
    return ParsedDocument(
        text=PAGE_BREAK.join(pages.texts),
        parser=pages.parser(),
        format="pdf",
        parsers_tried=trace.tried,
        pages=page_count,
        warnings=trace.warnings,
        metadata=metadata,
    )


def _prepare_pdf(data: bytes, password: str | None, trace: _Trace) -> _PdfSource:
    """Open with qpdf: decrypt, repair a damaged cross-reference table, check for traps."""
    try:
        pdf = _open_pdf(data, password)
    except pikepdf.PdfError as exc:
        message = _qpdf_message([str(exc)])
        damage = _pdf_damage(data, message) or f"qpdf: {message}"
        return _PdfSource(data=data, damage=damage)
    with pdf:
        source = _PdfSource(data=data, pages=len(pdf.pages), title=_pdf_title(pdf))
        source.cyclic_xobjects = _has_cyclic_xobjects(pdf)
        source.xfa = _has_xfa(pdf)
        qpdf_warnings = pdf.get_warnings()
        if qpdf_warnings:
            source.damage = _pdf_damage(data, _qpdf_message(qpdf_warnings))
            trace.warnings.append(f"pdf repaired by qpdf ({source.damage or 'minor damage'})")
        if pdf.is_encrypted:
            trace.warnings.append("pdf decrypted")
        if pdf.is_encrypted or qpdf_warnings:
            out = BytesIO()
            pdf.save(out)
            source.data = out.getvalue()
    return source


def _open_pdf(data: bytes, password: str | None) -> pikepdf.Pdf:
    try:
        return pikepdf.open(BytesIO(data))
    except pikepdf.PasswordError:
        if not password:
            raise PasswordRequired(
                "password required (PDF encrypted with a user password; none configured)",
                stage=_STAGE,
            ) from None
    try:
        return pikepdf.open(BytesIO(data), password=password)
    except pikepdf.PasswordError:
        raise PasswordRequired("wrong password", stage=_STAGE) from None


def _pdf_title(pdf: pikepdf.Pdf) -> str | None:
    try:
        title = str(pdf.docinfo.get("/Title", "")).strip()
    except (pikepdf.PdfError, ValueError):
        return None
    return title or None


def _has_xfa(pdf: pikepdf.Pdf) -> bool:
    try:
        form = pdf.Root.get("/AcroForm")
        return isinstance(form, pikepdf.Dictionary) and "/XFA" in form
    except (pikepdf.PdfError, ValueError):
        return False


def _drop_xfa_placeholder(source: _PdfSource, pages: _Pages, trace: _Trace) -> None:
    """An XFA form's pages may hold only the viewer's "Please wait..." notice: not content."""
    if not source.xfa:
        return
    for index, text in enumerate(pages.texts):
        if _XFA_PLACEHOLDER.search(text):
            pages.texts[index] = ""
            source.xfa_placeholder = True
    if source.xfa_placeholder:
        trace.warnings.append(
            "dynamic XFA form: the viewer's 'Please wait...' placeholder removed; "
            "the form's own content is not read"
        )


def _qpdf_message(messages: list[str]) -> str:
    """qpdf's distinct complaints without the stream name and offsets."""
    cleaned = (_QPDF_NOISE.sub("", message).strip(" :") for message in messages)
    return _short("; ".join(dict.fromkeys(m for m in cleaned if m)))


def _pdf_damage(data: bytes, qpdf_message: str) -> str | None:
    """A precise reason for a damaged PDF, or None if qpdf merely tidied it."""
    if b"startxref" not in data[-2048:] and b"%%EOF" not in data[-2048:]:
        return "truncated: no cross-reference table or trailer (%%EOF missing)"
    if "trailer" in qpdf_message or "xref" in qpdf_message:
        return f"broken cross-reference table ({qpdf_message})"
    return None


def _has_cyclic_xobjects(pdf: pikepdf.Pdf) -> bool:
    """Form XObjects that (indirectly) draw themselves make docling-parse crash."""
    done: set[tuple[int, int]] = set()
    try:
        return any(_xobject_cycle(page.obj.get("/Resources"), (), done) for page in pdf.pages)
    except (pikepdf.PdfError, RecursionError):
        return True


def _xobject_cycle(
    resources: Any,
    stack: tuple[tuple[int, int], ...],
    done: set[tuple[int, int]],
    content: bytes | None = None,
) -> bool:
    """Depth-first search over the forms a page (``content`` None) or a form draws."""
    if len(stack) > _MAX_XOBJECT_DEPTH:
        return True
    xobjects = resources.get("/XObject") if isinstance(resources, pikepdf.Dictionary) else None
    if not isinstance(xobjects, pikepdf.Dictionary):
        return False
    for name, xobject in xobjects.items():
        if not isinstance(xobject, pikepdf.Stream) or xobject.get("/Subtype") != "/Form":
            continue
        if content is not None and name.encode() not in content:
            continue
        key = xobject.objgen
        if key in stack:
            return True
        if key in done:
            continue
        # A form without its own /Resources draws with the resources of its caller.
        inner = xobject.get("/Resources", resources)
        if _xobject_cycle(inner, (*stack, key), done, _stream_bytes(xobject)):
            return True
        done.add(key)
    return False


def _stream_bytes(stream: pikepdf.Stream) -> bytes:
    try:
        return stream.read_bytes()
    except pikepdf.PdfError:
        return b""


def _nothing_from_pdf(
    source: _PdfSource, trace: _Trace, settings: ParseSettings, pages: _Pages
) -> Exception:
    if source.xfa_placeholder:
        return UnsupportedFormat(
            "unsupported format: dynamic XFA form (the PDF holds only the viewer's "
            "'Please wait...' placeholder; print the filled form to PDF)",
            stage=_STAGE,
        )
    if unreadable := unreadable_ocr(trace, settings):
        return unreadable
    if pages.broken:
        reason = next(iter(pages.broken.values()))
        return GarbageContent(
            f"text layer unreadable (broken font maps: {reason}) and OCR found no text "
            f"(tried: {', '.join(trace.tried)})",
            stage=_STAGE,
        )
    if source.damage:
        return CorruptDocument(
            f"{source.damage}; no text recoverable (tried: {', '.join(trace.tried)})",
            stage=_STAGE,
        )
    return EmptyDocument(f"no text extracted (tried: {', '.join(trace.tried)})", stage=_STAGE)


def _docling_pdf_pages(
    source: _PdfSource, pages: _Pages, settings: ParseSettings, trace: _Trace
) -> None:
    if source.cyclic_xobjects:
        trace.warnings.append("circular form XObjects: docling skipped")
        return
    trace.attempt("docling")
    try:
        document = _docling_convert(source.data, "pdf", settings, page_count=len(pages.texts))
    except _ParserFailed as exc:
        trace.warnings.append(f"docling failed: {exc}")
        return
    for index, text in enumerate(_docling_page_texts(document, len(pages.texts))):
        pages.offer(index, text, "docling")


def _docling_page_texts(document: DoclingDocument, page_count: int) -> list[str]:
    """Markdown per page: split the page-break export if it lines up with the pages that have
    content (one pass), else export page by page (quadratic in the page count)."""
    numbers = list(dict.fromkeys(_item_pages(document)))
    parts = _markdown(document).split(PAGE_BREAK)
    texts = [""] * page_count
    if numbers == sorted(numbers) and len(parts) == len(numbers):
        for page_no, part in zip(numbers, parts, strict=True):
            if 0 < page_no <= page_count:
                texts[page_no - 1] = part.strip()
        return texts
    return [_markdown(document, page_no=number) for number in range(1, page_count + 1)]


def _item_pages(document: DoclingDocument) -> Iterator[int]:
    for item, _level in document.iterate_items():
        provenance = getattr(item, "prov", None)
        if provenance:
            yield provenance[0].page_no


def _pdfium_page_count(source: _PdfSource) -> int:
    try:
        with _ENGINE_LOCK, pypdfium2.PdfDocument(source.data) as document:
            return len(document)
    except pypdfium2.PdfiumError as exc:
        reason = f"{source.damage or 'unreadable pdf'} (pdfium: {_short(exc)})"
        raise CorruptDocument(reason, stage=_STAGE) from None


def _pdfium_text_pages(
    source: _PdfSource, pages: _Pages, indexes: list[int], trace: _Trace
) -> None:
    """Plain text of each page with pypdfium2; an unreadable page is skipped, not fatal."""
    trace.attempt("pypdfium2")
    with _ENGINE_LOCK:
        try:
            document = pypdfium2.PdfDocument(source.data)
        except pypdfium2.PdfiumError as exc:
            trace.warnings.append(f"pypdfium2 cannot open the pdf: {_short(exc)}")
            return
        with document:
            for index in indexes:
                try:
                    page = document[index]
                    text = page.get_textpage().get_text_range()
                except (pypdfium2.PdfiumError, IndexError) as exc:
                    trace.warnings.append(f"page {index + 1} unreadable: {_short(exc)}")
                    continue
                pages.offer(index, text.replace("\r\n", "\n"), "pypdfium2")


def _ocr_pdf_pages(
    source: _PdfSource, pages: _Pages, indexes: list[int], settings: ParseSettings, trace: _Trace
) -> None:
    trace.attempt("tesseract")
    for index, image in _render_pages(source, indexes, settings.ocr_dpi, trace):
        text = ocr_image(image, settings, trace, f"page {index + 1}")
        pages.offer(index, text, "tesseract")


def _render_pages(
    source: _PdfSource, indexes: list[int], dpi: int, trace: _Trace
) -> Iterator[tuple[int, Image.Image]]:
    with _ENGINE_LOCK:
        document = pypdfium2.PdfDocument(source.data)
    try:
        for index in indexes:
            with _ENGINE_LOCK:
                try:
                    image = document[index].render(scale=dpi / 72).to_pil()
                except (pypdfium2.PdfiumError, IndexError) as exc:
                    trace.warnings.append(f"page {index + 1} cannot be rendered: {_short(exc)}")
                    continue
            yield index, image
    finally:
        with _ENGINE_LOCK:
            document.close()


# --- images and OCR ----------------------------------------------------------------------


def _parse_image(data: bytes, settings: ParseSettings, trace: _Trace) -> ParsedDocument:
    if not settings.ocr:
        raise EmptyDocument("image without text layer and OCR disabled", stage=_STAGE)
    trace.attempt("tesseract")
    try:
        image = Image.open(BytesIO(data))
        frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CorruptDocument(f"image cannot be decoded: {_short(exc)}", stage=_STAGE) from None
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


# --- docling formats ---------------------------------------------------------------------


def _parse_zip_document(
    data: bytes, fmt: str, settings: ParseSettings, trace: _Trace
) -> ParsedDocument:
    _check_zip(data)
    trace.attempt("docling")
    try:
        document = _docling_convert(data, fmt, settings)
    except _ParserFailed as exc:
        raise CorruptDocument(f"{fmt} cannot be parsed: {exc}", stage=_STAGE) from None
    text = _paged_markdown(document)
    if not text.strip():
        raise EmptyDocument("no text extracted (tried: docling)", stage=_STAGE)
    return _docling_result(document, text, fmt, trace)


def _paged_markdown(document: DoclingDocument) -> str:
    """Markdown with one ``\\f`` per page boundary (PPTX slides, XLSX sheets), so chunks can
    cite page numbers; formats without pages (DOCX, ODT, EPUB) come out as one page."""
    pages = document.num_pages()
    if not pages:
        return _markdown(document)
    return PAGE_BREAK.join(_docling_page_texts(document, pages))


def _parse_routed(data: bytes, fmt: str, settings: ParseSettings, trace: _Trace) -> ParsedDocument:
    """A format docling reads after a converter of ``genai_ingest.formats`` (or as is)."""
    if data.startswith(b"PK\x03\x04"):
        _check_zip(data)
    route = formats.ROUTES[fmt]
    if route.tool:
        trace.attempt(route.tool)
    from genai_ingest.isolation import parse_deadline_s  # isolation imports this module

    # The converter must end before the parse deadline kills this worker (and orphans soffice).
    deadline = parse_deadline_s(data, settings) * _CONVERT_SHARE_OF_DEADLINE
    converted, docling_format = formats.prepare(
        data, fmt, min(settings.convert_timeout_s, deadline)
    )
    trace.attempt("docling")
    try:
        document = _docling_convert(converted, docling_format, settings)
    except _ParserFailed as exc:
        name = FORMAT_NAMES.get(fmt, fmt)
        raise CorruptDocument(f"{name} cannot be parsed: {exc}", stage=_STAGE) from None
    text = _paged_markdown(document)
    if not text.strip():
        raise EmptyDocument(f"no text extracted (tried: {', '.join(trace.tried)})", stage=_STAGE)
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
    data: bytes, fmt: str, settings: ParseSettings, trace: _Trace
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
        document = _docling_convert(_docling_text_bytes(text, fmt), fmt, settings)
        markdown = _markdown(document)
    except _ParserFailed as exc:
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


def _docling_result(
    document: DoclingDocument, text: str, fmt: str, trace: _Trace
) -> ParsedDocument:
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


def _markdown(document: DoclingDocument, page_no: int | None = None) -> str:
    return document.export_to_markdown(
        image_placeholder="",
        escape_html=False,
        page_no=page_no,
        page_break_placeholder=PAGE_BREAK,
    ).strip()


def _docling_convert(
    data: bytes, fmt: str, settings: ParseSettings, page_count: int | None = None
) -> DoclingDocument:
    """Convert with the shared converter; raise ``_ParserFailed`` with docling's reason."""
    from docling.datamodel.base_models import ConversionStatus
    from docling_core.types.io import DocumentStream

    stream = DocumentStream(name=f"document.{_DOCLING_EXTENSIONS[fmt]}", stream=BytesIO(data))
    page_range = (1, page_count) if page_count else (1, settings.max_pages)
    try:
        with _ENGINE_LOCK:
            converter = _converter(settings.pdf_pipeline)
            result = converter.convert(stream, raises_on_error=False, page_range=page_range)
    except (MissingDependency, MemoryError):
        raise
    except Exception as exc:  # docling raises many unrelated types for bad input
        raise _ParserFailed(f"{type(exc).__name__}: {_short(exc)}") from None
    ok = (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS)
    if result.status not in ok or result.document is None:
        _raise_if_out_of_memory(getattr(result.input, "_rejection", None))
        reasons = "; ".join(_short(e.error_message) for e in result.errors[:3])
        raise _ParserFailed(reasons or f"status {result.status.value}")
    return result.document


def _raise_if_out_of_memory(rejection: Any) -> None:
    """docling records a backend's ``MemoryError`` (the worker's memory cap) as a rejected
    input; raise it again so the cap is reported as such (``isolation.parse_bounded``)."""
    error = getattr(rejection, "original_error", None)
    for _ in range(16):  # the cause chain, bounded
        if error is None:
            return
        if isinstance(error, MemoryError):
            raise MemoryError("docling ran out of memory")
        error = error.__cause__ or error.__context__


@functools.cache
def _converter(pdf_pipeline: str) -> DocumentConverter:
    """One docling converter per process and PDF pipeline (docling imports take seconds)."""
    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import DocumentConverter

    libreoffice.keep_docling_from_rendering_shapes()

    formats = [
        InputFormat.PDF,
        InputFormat.DOCX,
        InputFormat.PPTX,
        InputFormat.XLSX,
        InputFormat.ODT,
        InputFormat.ODS,
        InputFormat.ODP,
        InputFormat.EPUB,
        InputFormat.HTML,
        InputFormat.MHTML,
        InputFormat.MD,
        InputFormat.ASCIIDOC,
        InputFormat.CSV,
        InputFormat.EMAIL,
    ]
    converter = DocumentConverter(
        allowed_formats=formats, format_options={InputFormat.PDF: _pdf_option(pdf_pipeline)}
    )
    try:
        converter.initialize_pipeline(InputFormat.PDF)
    except Exception as exc:  # layout models absent: not the document's fault
        raise MissingDependency(
            f"docling {pdf_pipeline} pdf pipeline unavailable: {_short(exc)}", stage=_STAGE
        ) from None
    return converter


def _pdf_option(pdf_pipeline: str) -> Any:
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions
    from docling.document_converter import NativePdfFormatOption, PdfFormatOption

    if pdf_pipeline == "native":
        options = NativePdfPipelineOptions(
            generate_page_images=False, generate_picture_images=False
        )
        return NativePdfFormatOption(pipeline_options=options)
    # OCR is ours (Tesseract, per sparse page); docling only does layout and tables.
    return PdfFormatOption(pipeline_options=PdfPipelineOptions(do_ocr=False))


# --- helpers -----------------------------------------------------------------------------


def _describe_binary(data: bytes, name: str) -> str:
    import filetype

    kind = filetype.guess(data[:8192])
    detected = kind.mime if kind else "unrecognised binary"
    return f"{detected} ({name or 'no name'}, {len(data)} bytes)"


def _unmapped_share(text: str) -> float:
    visible = sum(1 for char in text if not char.isspace())
    return text.count("\ufffd") / visible if visible else 0.0


def _useful_chars(text: str) -> int:
    """Characters that carry text: not whitespace, not U+FFFD (unmapped glyphs)."""
    return sum(1 for char in text if not char.isspace() and char != "\ufffd")


def _short(exc: BaseException | str, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
