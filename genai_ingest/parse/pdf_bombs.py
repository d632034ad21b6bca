"""FlateDecode bombs in PDF page content: a content stream of a few MB that inflates to
gigabytes makes docling-parse and pdfium allocate past the worker's memory cap, and pdfium
aborts the worker (SIGABRT) instead of failing the page. Before any parser reads the PDF, each
page content stream that inflates past ``parse.max_page_content_mb`` is cut to that size at an
operator boundary: the text drawn first (all of it, in the bombs seen) is still read.

Only the first ``limit + 1`` bytes of a stream are inflated to tell, so the check costs no
more memory than the limit."""

from __future__ import annotations

import zlib

import pikepdf


def defuse_content_bombs(pdf: pikepdf.Pdf, limit: int, max_pages: int) -> list[int]:
    """Cut every page content stream that inflates past ``limit`` bytes; the page numbers cut."""
    cut = []
    for number, page in enumerate(pdf.pages[:max_pages], 1):
        contents = page.obj.get("/Contents")
        streams = contents if isinstance(contents, pikepdf.Array) else [contents]
        for stream in streams:
            if isinstance(stream, pikepdf.Stream) and (head := _head_past(stream, limit)):
                stream.write(head)
                cut.append(number)
    return sorted(set(cut))


def _head_past(stream: pikepdf.Stream, limit: int) -> bytes | None:
    """The stream's first ``limit`` inflated bytes, up to the last whitespace, if it inflates
    past ``limit``; None for a smaller stream or one not plainly FlateDecode-encoded."""
    if stream.get("/Filter") not in (
        pikepdf.Name.FlateDecode,
        pikepdf.Array([pikepdf.Name.FlateDecode]),
    ):
        return None
    if stream.get("/DecodeParms") is not None:
        return None
    try:
        head = zlib.decompressobj().decompress(stream.read_raw_bytes(), limit + 1)
    except zlib.error:
        return None  # damaged: the parsers' own repair decides
    if len(head) <= limit:
        return None
    boundary = max(head.rfind(space, 0, limit) for space in (b" ", b"\n", b"\r", b"\t"))
    return head[: boundary + 1]
