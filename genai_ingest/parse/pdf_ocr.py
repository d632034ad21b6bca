"""OCR of the PDF pages that have too little text: rendered with pypdfium2, read by Tesseract.

A blank page costs nothing: one with nothing drawn on it (no page objects, no annotations) is
not rendered, and one that renders to a single colour is not OCR'd (a thousand blank pages
once took over a second each). Without Tesseract the pages it could not read are returned,
and the document keeps its other pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pypdfium2
import pypdfium2.raw as pdfium_c
from PIL import Image

from genai_ingest.config import ParseSettings
from genai_ingest.failures.errors import MissingDependency
from genai_ingest.parse.docling_engine import ENGINE_LOCK, Trace, short
from genai_ingest.parse.ocr import ocr_image

#: A rendered page whose grey levels span no more than this is blank (scanner noise aside).
_BLANK_GREY_RANGE = 8


@dataclass
class OcrResult:
    """What OCR left undone: the pages Tesseract could not read, and why."""

    missing: MissingDependency | None = None
    without_ocr: list[int] = field(default_factory=list)


def ocr_pages(
    data: bytes,
    indexes: list[int],
    settings: ParseSettings,
    trace: Trace,
    offer: Callable[[int, str], None],
) -> OcrResult:
    """OCR each page of ``indexes`` that shows something; ``offer(index, text)`` its text."""
    trace.attempt("tesseract")
    result = OcrResult()
    for index, image in _render_pages(data, indexes, settings.ocr_dpi, trace):
        if _is_blank(image):
            continue
        try:
            text = ocr_image(image, settings, trace, f"page {index + 1}")
        except MissingDependency as exc:
            result.missing, result.without_ocr = exc, indexes[indexes.index(index) :]
            break
        offer(index, text)
    return result


def _render_pages(
    data: bytes, indexes: list[int], dpi: int, trace: Trace
) -> Iterator[tuple[int, Image.Image]]:
    with ENGINE_LOCK:
        document = pypdfium2.PdfDocument(data)
    try:
        for index in indexes:
            with ENGINE_LOCK:
                try:
                    page = document[index]
                    if _draws_nothing(page):
                        continue
                    image = page.render(scale=dpi / 72).to_pil()
                except (pypdfium2.PdfiumError, IndexError) as exc:
                    trace.warnings.append(f"page {index + 1} cannot be rendered: {short(exc)}")
                    continue
            yield index, image
    finally:
        with ENGINE_LOCK:
            document.close()


def _draws_nothing(page: pypdfium2.PdfPage) -> bool:
    return (
        pdfium_c.FPDFPage_CountObjects(page.raw) == 0
        and pdfium_c.FPDFPage_GetAnnotCount(page.raw) == 0
    )


def _is_blank(image: Image.Image) -> bool:
    low, high = image.convert("L").getextrema()
    return high - low <= _BLANK_GREY_RANGE
