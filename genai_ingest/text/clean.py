"""Clean parser Markdown: repair encoding, normalise Unicode, drop page furniture and noise.

Normalisation is NFC plus a few targeted compatibility folds, not NFKC: NFKC would also turn
``x²`` into ``x2``, ``½`` into ``1⁄2`` and ``™`` into ``TM``, changing the meaning of maths,
units and names in the stored chunk text. The folds that *are* wanted for retrieval are done
explicitly: Latin ligatures and full-width ASCII (by ftfy), Arabic presentation forms (PDF
extraction artefacts), and exotic spaces. Markdown syntax (``#``, ``|``, ``-``, ``` ``` ```)
is ASCII and unaffected.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

import ftfy

from genai_ingest.config import CleanSettings
from genai_ingest.text.reflow import reflow

_FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html="auto",  # only lines without "<", so HTML/XML code listings stay intact
    uncurl_quotes=False,  # curly quotes are legitimate text
    remove_control_chars=False,  # done below, keeping \f for page handling
    normalization="NFC",
    explain=False,
)

# C0/C1 controls except \t, \n, \f (page breaks, removed later); \r is gone after ftfy.
# Plus invisible characters that only carry layout hints (soft hyphen, zero-width space, word
# joiner, BOM). ZWJ/ZWNJ are kept: Persian, Indic scripts and emoji need them.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\r\x0e-\x1f\x7f-\x9f\u00ad\u200b\u2060\ufeff]+")
# Unicode non-characters (U+FFFE, U+FFFF, U+FDD0-U+FDEF, U+nFFFE/F) are never text: parsers
# leave them from byte-order marks read in the wrong order or from bad font maps.
_NONCHARACTERS_RE = re.compile(
    "[\ufdd0-\ufdef\ufffe\uffff"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(1, 17))
    + "]"
)
# A few U+FFFD (bytes no decoder could read) are removed; many are left for validation to
# reject the text as binary noise.
_REPLACEMENT = "\ufffd"
_MAX_STRAY_REPLACEMENT_SHARE = 0.02
_SPACES_RE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_ARABIC_PRESENTATION_RE = re.compile(r"[\ufb50-\ufdff\ufe70-\ufefe]+")
_INNER_SPACES_RE = re.compile(r"(?<=\S) {2,}")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
_HYPHENATED_RE = re.compile(r"([^\W\d_]{2})-\n[ \t]*([^\W\d_]{2})")

# Lines that are page furniture wherever they appear.
_PAGE_LABEL_RE = re.compile(
    r"^\s*(?:(?:page|seite|página|pagina|p\.)\s*\d{1,4}(?:\s*(?:of|/|von|de|sur)\s*\d{1,4})?"
    r"|[-–—]\s*\d{1,4}\s*[-–—])\s*$",
    re.IGNORECASE,
)
# Bare page numbers ("12", "12 / 40", "xiv") are only furniture at the top or bottom of a page.
_BARE_PAGE_NUMBER_RE = re.compile(r"^\s*(?:\d{1,4}(?:\s*/\s*\d{1,4})?|[ivxlc]{1,6})\s*$")
_EDGE_LINES = 3
_SHORT_LINE_CHARS = 80
_DIGITS_RE = re.compile(r"\d+")


def clean_text(
    text: str, settings: CleanSettings, *, hard_wrapped: bool = False, keep_pages: bool = False
) -> str:
    """Return normalised Markdown: repaired, without page headers/footers, tidy whitespace.

    ``hard_wrapped`` (PDF and OCR text) reflows lines into paragraphs (``reflow``) if
    ``settings.reflow_hard_wrapped``; ``keep_pages`` separates pages by ``\\f`` (page citations)
    instead of a blank line."""
    text = ftfy.fix_text(text, _FTFY_CONFIG)
    text = _fold_compatibility(text)
    text = _remove_control_chars(text)
    pages = text.split("\f")
    paged = len(pages) > 1
    lines = [_drop_page_labels(page.split("\n"), bare_numbers=paged) for page in pages]
    if paged:
        lines = _drop_repeated_lines(lines, settings)
    texts = ["\n".join(page) for page in lines]
    if hard_wrapped and settings.reflow_hard_wrapped:
        texts = [reflow(page) for page in texts]
    if keep_pages:
        return "\f".join(_clean_page(page) for page in texts)
    return _clean_page("\n\n".join(texts))


def _clean_page(text: str) -> str:
    return _normalise_whitespace(_HYPHENATED_RE.sub(_join_hyphenated, text))


def _fold_compatibility(text: str) -> str:
    """Fold the compatibility characters that are extraction artefacts (see module doc)."""
    text = _SPACES_RE.sub(" ", text)
    return _ARABIC_PRESENTATION_RE.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)


def _remove_control_chars(text: str) -> str:
    """Drop C0/C1 controls (but \\n, \\t, \\f), layout-only invisible characters,
    non-characters and stray U+FFFD (``com\\ufffepiler`` -> ``compiler``)."""
    text = _NONCHARACTERS_RE.sub("", _CONTROL_RE.sub("", text))
    visible = len(text) - sum(text.count(space) for space in " \n\t\f")
    if text.count(_REPLACEMENT) <= _MAX_STRAY_REPLACEMENT_SHARE * visible:
        text = text.replace(_REPLACEMENT, "")
    return text


def _join_hyphenated(match: re.Match[str]) -> str:
    """Undo end-of-line hyphenation ("exam-\\nple" -> "example") before a lower-case letter."""
    head, tail = match.groups()
    return head + tail if tail[0].islower() else match.group()


def _edge_indexes(lines: list[str]) -> list[int]:
    """Indexes of the first and last few non-blank lines of a page."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    return sorted(set(filled[:_EDGE_LINES] + filled[-_EDGE_LINES:]))


def _drop_page_labels(lines: list[str], *, bare_numbers: bool) -> list[str]:
    """Remove "Page 3 of 10" / "- 3 -" lines and, in paged text, bare page numbers at the page
    edges (in unpaged text a lone "2024" is more likely a year than a page number)."""
    edges = set(_edge_indexes(lines)) if bare_numbers else set()
    return [
        line
        for i, line in enumerate(lines)
        if not _PAGE_LABEL_RE.match(line) and not (i in edges and _BARE_PAGE_NUMBER_RE.match(line))
    ]


def _line_key(line: str) -> str | None:
    """Comparison key of a header/footer candidate (digits masked), None if not a candidate:
    headings, table rows and code fences are structure, never page furniture."""
    stripped = " ".join(line.split())
    if not stripped or len(stripped) > _SHORT_LINE_CHARS or stripped.startswith(("|", "```", "#")):
        return None
    return _DIGITS_RE.sub("#", stripped.casefold())


def _page_keys(lines: list[str]) -> set[str]:
    keys = (_line_key(lines[i]) for i in _edge_indexes(lines))
    return {key for key in keys if key}


def _drop_repeated_lines(pages: list[list[str]], settings: CleanSettings) -> list[list[str]]:
    """Remove short lines at page edges that repeat on many pages (running headers/footers)."""
    counts: Counter[str] = Counter()
    for lines in pages:
        counts.update(_page_keys(lines))
    needed = max(settings.repeated_line_min_pages, settings.repeated_line_min_share * len(pages))
    repeated = {key for key, n in counts.items() if n >= needed}
    if not repeated:
        return pages
    return [_without(lines, repeated) for lines in pages]


def _without(lines: list[str], repeated: Iterable[str]) -> list[str]:
    edges = set(_edge_indexes(lines))
    return [
        line for i, line in enumerate(lines) if i not in edges or _line_key(line) not in repeated
    ]


def _normalise_whitespace(text: str) -> str:
    """Collapse inner space runs (indentation kept), strip line ends, at most one blank line."""
    lines = (_INNER_SPACES_RE.sub(" ", line).rstrip() for line in text.split("\n"))
    return _BLANK_LINES_RE.sub("\n\n", "\n".join(lines)).strip()
