"""How long a document may take to parse, judged from its size and magic bytes before any
parser opens it: the worker pool's deadline and the converters' budget within it."""

from __future__ import annotations

import re

from genai_ingest.config import ParseSettings

_BINARY_MAGIC = (
    b"PK",
    b"\xd0\xcf\x11\xe0",
    b"\x89PNG",
    b"\xff\xd8",
    b"GIF8",
    b"II*",
    b"MM\x00*",
    b"RIFF",
    b"BM",
)
_PDF_PAGE_RE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_PDF_COUNT_RE = re.compile(rb"/Count\s+(\d{1,7})")


def parse_deadline_s(data: bytes, settings: ParseSettings) -> float:
    """Seconds a document may take to parse: short for text, longer per MB of binary formats
    and per PDF page. Judged from magic bytes only: the main process opens no container."""
    megabytes = len(data) / 1_000_000
    head = data[:8192]
    is_pdf = b"%PDF-" in head[:1024]
    binary = is_pdf or b"\x00" in head or head.startswith(_BINARY_MAGIC)
    per_mb = settings.timeout_per_mb_s if binary else settings.text_timeout_per_mb_s
    deadline = settings.timeout_s + per_mb * megabytes
    if is_pdf:
        deadline += settings.timeout_per_page_s * _pdf_pages_estimate(data, settings.max_pages)
    return min(deadline, settings.max_timeout_s)


def _pdf_pages_estimate(data: bytes, max_pages: int) -> int:
    """Page objects, or the page tree's ``/Count`` where they hide in object streams."""
    pages = len(_PDF_PAGE_RE.findall(data))
    counts = [int(n) for n in _PDF_COUNT_RE.findall(data)]
    return min(max([pages, *counts]), max_pages)
