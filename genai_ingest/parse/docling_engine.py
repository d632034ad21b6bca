"""The docling converter shared by the parsers, and the parser chain's bookkeeping.

One converter per process (docling imports take seconds), one conversion at a time
(``ENGINE_LOCK``: docling-parse and pdfium keep process-global state). Pages of paged formats
are separated by ``PAGE_BREAK``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any

from genai_ingest.config import ParseSettings
from genai_ingest.failures.errors import MissingDependency, Stage
from genai_ingest.parse.formats import libreoffice
from genai_ingest.parse.ocr import OcrLog

if TYPE_CHECKING:
    from docling.document_converter import DocumentConverter
    from docling_core.types.doc import DoclingDocument

PAGE_BREAK = "\f"
_STAGE = Stage.PARSE
# docling-parse and pdfium keep process-global state: one conversion or render at a time.
ENGINE_LOCK = threading.RLock()
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


class ParserFailed(Exception):
    """One parser of the chain produced nothing usable; the next one is tried."""


@dataclass
class Trace(OcrLog):
    """Which parsers ran and what went wrong along the way (OCR's notes included)."""

    tried: list[str] = field(default_factory=list)

    def attempt(self, parser: str) -> None:
        if parser not in self.tried:
            self.tried.append(parser)


def page_texts(document: DoclingDocument, page_count: int) -> list[str]:
    """Markdown per page: split the page-break export if it lines up with the pages that have
    content (one pass), else export page by page (quadratic in the page count)."""
    numbers = list(dict.fromkeys(_item_pages(document)))
    parts = to_markdown(document).split(PAGE_BREAK)
    texts = [""] * page_count
    if numbers == sorted(numbers) and len(parts) == len(numbers):
        for page_no, part in zip(numbers, parts, strict=True):
            if 0 < page_no <= page_count:
                texts[page_no - 1] = part.strip()
        return texts
    return [to_markdown(document, page_no=number) for number in range(1, page_count + 1)]


def _item_pages(document: DoclingDocument) -> Iterator[int]:
    for item, _level in document.iterate_items():
        provenance = getattr(item, "prov", None)
        if provenance:
            yield provenance[0].page_no


def to_markdown(document: DoclingDocument, page_no: int | None = None) -> str:
    return document.export_to_markdown(
        image_placeholder="",
        escape_html=False,
        page_no=page_no,
        page_break_placeholder=PAGE_BREAK,
    ).strip()


def docling_convert(
    data: bytes, fmt: str, settings: ParseSettings, page_count: int | None = None
) -> DoclingDocument:
    """Convert with the shared converter; raise ``ParserFailed`` with docling's reason."""
    from docling.datamodel.base_models import ConversionStatus
    from docling_core.types.io import DocumentStream

    stream = DocumentStream(name=f"document.{_DOCLING_EXTENSIONS[fmt]}", stream=BytesIO(data))
    page_range = (1, page_count) if page_count else (1, settings.max_pages)
    try:
        with ENGINE_LOCK:
            converter = _converter(settings.pdf_pipeline)
            result = converter.convert(stream, raises_on_error=False, page_range=page_range)
    except (MissingDependency, MemoryError):
        raise
    except Exception as exc:  # docling raises many unrelated types for bad input
        raise ParserFailed(f"{type(exc).__name__}: {short(exc)}") from None
    ok = (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS)
    if result.status not in ok or result.document is None:
        _raise_if_out_of_memory(getattr(result.input, "_rejection", None))
        reasons = "; ".join(short(e.error_message) for e in result.errors[:3])
        raise ParserFailed(reasons or f"status {result.status.value}")
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
            f"docling {pdf_pipeline} pdf pipeline unavailable: {short(exc)}", stage=_STAGE
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


def short(exc: BaseException | str, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
