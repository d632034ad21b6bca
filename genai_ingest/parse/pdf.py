"""PDF parsing: decrypt/repair (pikepdf/qpdf) -> docling -> pypdfium2 text per page ->
Tesseract OCR of pages with too little text (``pdf_ocr``).

A text layer that reads as a broken font map is refused; an unreadable page is skipped, not
fatal; without Tesseract the pages with text are kept and the ones that needed OCR are named
(``pages_without_ocr``). Pages are separated by ``PAGE_BREAK``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pikepdf
import pypdfium2

from genai_ingest.config import ParseSettings
from genai_ingest.failures.errors import (
    CorruptDocument,
    EmptyDocument,
    GarbageContent,
    PasswordRequired,
    Stage,
    UnsupportedFormat,
)
from genai_ingest.models import ParsedDocument
from genai_ingest.parse import docling_engine
from genai_ingest.parse.docling_engine import (
    ENGINE_LOCK,
    PAGE_BREAK,
    ParserFailed,
    Trace,
    page_texts,
    short,
)
from genai_ingest.parse.ocr import unreadable_ocr
from genai_ingest.parse.pdf_bombs import defuse_content_bombs
from genai_ingest.parse.pdf_ocr import OcrResult, ocr_pages
from genai_ingest.parse.textlayer import broken_reason, main_script

_STAGE = Stage.PARSE
_MAX_XOBJECT_DEPTH = 64
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


def parse_pdf(
    data: bytes, settings: ParseSettings, password: str | None, trace: Trace
) -> ParsedDocument:
    source = _prepare_pdf(data, password, settings, trace)
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
    ocr = OcrResult()
    if settings.ocr and (sparse := pages.sparse(min_chars)):
        offer = functools.partial(pages.offer, parser="tesseract")
        ocr = ocr_pages(source.data, sparse, settings, trace, offer)
    trace.warnings.extend(pages.broken_warnings())
    _drop_xfa_placeholder(source, pages, trace)
    if not any(_useful_chars(text) for text in pages.texts):
        raise ocr.missing or _nothing_from_pdf(source, trace, settings, pages)
    metadata: dict[str, Any] = {"title": source.title} if source.title else {}
    if ocr.missing:
        _flag_pages_without_ocr(ocr, trace, metadata)
    return ParsedDocument(
        text=PAGE_BREAK.join(pages.texts),
        parser=pages.parser(),
        format="pdf",
        parsers_tried=trace.tried,
        pages=page_count,
        warnings=trace.warnings,
        metadata=metadata,
    )


def _prepare_pdf(
    data: bytes, password: str | None, settings: ParseSettings, trace: Trace
) -> _PdfSource:
    """Open with qpdf: decrypt, repair a damaged cross-reference table, check for traps,
    defuse content bombs."""
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
        limit = settings.max_page_content_mb * 1024 * 1024
        if bombs := defuse_content_bombs(pdf, limit, settings.max_pages):
            trace.warnings.append(
                f"page content of page(s) {', '.join(map(str, bombs))} inflates past "
                f"{settings.max_page_content_mb} MB: cut there (parse.max_page_content_mb)"
            )
        if pdf.is_encrypted or qpdf_warnings or bombs:
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


def _drop_xfa_placeholder(source: _PdfSource, pages: _Pages, trace: Trace) -> None:
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
    return short("; ".join(dict.fromkeys(m for m in cleaned if m)))


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


def _flag_pages_without_ocr(ocr: OcrResult, trace: Trace, metadata: dict[str, Any]) -> None:
    """The document keeps the pages that have text; the ones OCR could not read are named."""
    numbers = ", ".join(str(index + 1) for index in ocr.without_ocr)
    metadata["pages_without_ocr"] = numbers
    trace.warnings.append(
        f"page(s) {numbers} needed OCR and were not read ({ocr.missing}): the other pages are "
        "indexed; the next run after it is installed reads them"
    )


def _nothing_from_pdf(
    source: _PdfSource, trace: Trace, settings: ParseSettings, pages: _Pages
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
    source: _PdfSource, pages: _Pages, settings: ParseSettings, trace: Trace
) -> None:
    if source.cyclic_xobjects:
        trace.warnings.append("circular form XObjects: docling skipped")
        return
    trace.attempt("docling")
    try:
        document = docling_engine.docling_convert(
            source.data, "pdf", settings, page_count=len(pages.texts)
        )
    except ParserFailed as exc:
        trace.warnings.append(f"docling failed: {exc}")
        return
    for index, text in enumerate(page_texts(document, len(pages.texts))):
        pages.offer(index, text, "docling")


def _pdfium_page_count(source: _PdfSource) -> int:
    try:
        with ENGINE_LOCK, pypdfium2.PdfDocument(source.data) as document:
            return len(document)
    except pypdfium2.PdfiumError as exc:
        reason = f"{source.damage or 'unreadable pdf'} (pdfium: {short(exc)})"
        raise CorruptDocument(reason, stage=_STAGE) from None


def _pdfium_text_pages(source: _PdfSource, pages: _Pages, indexes: list[int], trace: Trace) -> None:
    """Plain text of each page with pypdfium2; an unreadable page is skipped, not fatal."""
    trace.attempt("pypdfium2")
    with ENGINE_LOCK:
        try:
            document = pypdfium2.PdfDocument(source.data)
        except pypdfium2.PdfiumError as exc:
            trace.warnings.append(f"pypdfium2 cannot open the pdf: {short(exc)}")
            return
        with document:
            for index in indexes:
                try:
                    page = document[index]
                    text = page.get_textpage().get_text_range()
                except (pypdfium2.PdfiumError, IndexError) as exc:
                    trace.warnings.append(f"page {index + 1} unreadable: {short(exc)}")
                    continue
                pages.offer(index, text.replace("\r\n", "\n"), "pypdfium2")


def _unmapped_share(text: str) -> float:
    visible = sum(1 for char in text if not char.isspace())
    return text.count("\ufffd") / visible if visible else 0.0


def _useful_chars(text: str) -> int:
    """Characters that carry text: not whitespace, not U+FFFD (unmapped glyphs)."""
    return sum(1 for char in text if not char.isspace() and char != "\ufffd")
