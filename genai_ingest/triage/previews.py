"""What an entry's raw bytes look like in the triage app: text, a PNG (a PDF's first page, an
image) or a note saying why there is no preview."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

from genai_ingest.parse.sniff import decode_text, sniff_format

TEXT_FORMATS = {"text", "markdown", "html", "csv", "eml", "asciidoc"}


@dataclass
class Preview:
    """What the raw bytes look like: text, a PNG (PDF first page, image) or only a note."""

    kind: Literal["text", "image", "none"]
    format: str
    note: str = ""
    text: str = ""
    png: bytes | None = None


def preview(
    raw: bytes | None,
    name: str,
    password: str | None = None,
    max_chars: int = 5000,
    max_px: int = 900,
) -> Preview:
    """Preview the raw bytes of an entry; an encrypted PDF needs ``password``."""
    if raw is None:
        return Preview("none", "unknown", "no raw bytes stored with this entry")
    fmt = sniff_format(raw, name)
    size = f"{fmt}, {len(raw):,} bytes"
    if fmt in TEXT_FORMATS:
        text = decode_text(raw)
        cut = f" (first {max_chars:,} of {len(text):,} characters)" if len(text) > max_chars else ""
        return Preview("text", fmt, size + cut, text=text[:max_chars])
    if fmt == "pdf":
        return _pdf_preview(raw, password, size, max_px)
    if fmt == "image":
        return _image_preview(raw, size, max_px)
    if fmt == "ooxml_encrypted":
        return Preview("none", fmt, f"{size}: encrypted Office document, no preview")
    return Preview("none", fmt, f"{size}: no preview for this format")


def _pdf_preview(raw: bytes, password: str | None, size: str, max_px: int) -> Preview:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(raw, password=password or None)
    except pdfium.PdfiumError as exc:
        if "password" not in str(exc).lower():
            return Preview("none", "pdf", f"{size}: cannot render ({exc})")
        hint = "wrong password" if password else "encrypted: enter its password to preview"
        return Preview("none", "pdf", f"{size}: {hint}")
    try:
        if len(pdf) == 0:
            return Preview("none", "pdf", f"{size}: no pages")
        page = pdf[0]
        scale = max_px / max(page.get_size())
        image = page.render(scale=scale).to_pil()
        return Preview("image", "pdf", f"{size}, page 1 of {len(pdf)}", png=_png(image))
    finally:
        pdf.close()


def _image_preview(raw: bytes, size: str, max_px: int) -> Preview:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.thumbnail((max_px, max_px))
            return Preview("image", "image", f"{size}, {image.format}", png=_png(image))
    except (UnidentifiedImageError, OSError) as exc:
        return Preview("none", "image", f"{size}: cannot render ({exc})")


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()
