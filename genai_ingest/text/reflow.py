"""Reflow hard-wrapped text (PDF and OCR pages) into paragraphs.

PDF text layers know lines, not paragraphs: docling returns every line as a paragraph of its own
and pdfium separates lines with single newlines, so a sentence ends up split across paragraphs
(``"were not\\n\\nsoftware programs"``), which misleads sentence splitting and embedding. Per
page, a line continues the paragraph above when

- the line above reaches (nearly) the page's text width, or
- the line above does not end a sentence and this line starts in lower case,

unless either line is structure: a Markdown heading, table row or code, or a list item (which
starts a paragraph of its own). Lines of Chinese or Japanese join without a space (vertical text
has a line per character). Words hyphenated at a line end are joined ("exam-" + "ple");
a hyphen before an upper-case letter or a digit stays ("Lucene-" + "BM25"). Bullet glyphs from
symbol fonts (private-use code points, and ``∞``, which the Symbol font's bullet slot often maps
to) become ``•``. Blank lines carry no information in this text (docling puts one after every
line), so paragraph breaks come from the rules above only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FULL_LINE_SHARE = 0.8  # a line this close to the page's text width wraps into the next one
_WIDTH_PERCENTILE = 0.9  # the page's text width: this percentile of its prose line lengths
_MIN_PROSE_LINES = 3

_BULLET_GLYPH_RE = re.compile(r"^[\ue000-\uf8ff∞▪●■](?=\s)")
_LIST_ITEM_RE = re.compile(r"^(?:[•◦‣▪\-*–]\s|\(?(?:\d{1,3}|[a-zA-Z]|[ivxlc]{1,5})[.)]\s)")
_STRUCTURE_RE = re.compile(r"^(?:#{1,6}\s|\||```|~~~|\$\$|<!--)")
_SENTENCE_END_RE = re.compile(r"[.!?:;…][\"'”’)\]]*$")
_HYPHEN_END_RE = re.compile(r"[^\W\d_]-$")
#: Scripts written without spaces between words (Han, kana, CJK punctuation, full-width forms;
#: not Hangul, which spaces its words): lines of them join without a space.
_UNSPACED_SCRIPT_RE = re.compile(
    r"[\u3000-\u303f\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    r"\uff00-\uff60\U00020000-\U0003134f]"
)


@dataclass
class _Block:
    kind: str  # prose, list (an item), structure (heading, table row) or code
    text: str
    last_line: int  # length of the last source line joined into it


def reflow(page: str) -> str:
    """The page's text with hard-wrapped lines joined into paragraphs (see module doc)."""
    blocks: list[_Block] = []
    in_code = False
    lines = [_map_bullet(line.strip()) for line in page.split("\n")]
    width = _text_width([line for line in lines if line and not _STRUCTURE_RE.match(line)])
    for line in lines:
        fence = line.startswith(("```", "~~~"))
        if in_code or fence:
            blocks.append(_Block("code", line, len(line)))
            in_code = in_code != fence
            continue
        if not line:
            continue
        kind = _kind(line)
        if blocks and kind == "prose" and _continues(blocks[-1], line, width):
            blocks[-1].text = _join(blocks[-1].text, line)
            blocks[-1].last_line = len(line)
            continue
        blocks.append(_Block(kind, line, len(line)))
    return _render(blocks)


def _map_bullet(line: str) -> str:
    return _BULLET_GLYPH_RE.sub("•", line)


def _kind(line: str) -> str:
    if _STRUCTURE_RE.match(line):
        return "structure"
    if _LIST_ITEM_RE.match(line):
        return "list"
    return "prose"


def _text_width(prose: list[str]) -> int:
    lengths = sorted(len(line) for line in prose)
    if not lengths:
        return 0
    if len(lengths) < _MIN_PROSE_LINES:
        return lengths[-1]
    return lengths[min(len(lengths) - 1, int(len(lengths) * _WIDTH_PERCENTILE))]


def _continues(block: _Block, line: str, width: int) -> bool:
    """True if ``line`` continues the paragraph or list item ``block`` ends with."""
    if block.kind not in ("prose", "list"):
        return False
    full = width > 0 and block.last_line >= _FULL_LINE_SHARE * width
    return full or (line[0].islower() and not _SENTENCE_END_RE.search(block.text))


def _join(paragraph: str, line: str) -> str:
    if _HYPHEN_END_RE.search(paragraph) and line[0].islower():
        return paragraph[:-1] + line
    if paragraph.endswith("-"):
        return paragraph + line
    if _UNSPACED_SCRIPT_RE.match(paragraph[-1]) and _UNSPACED_SCRIPT_RE.match(line[0]):
        return paragraph + line
    return f"{paragraph} {line}"


def _render(blocks: list[_Block]) -> str:
    """Blocks as Markdown: table rows, code and list items one per line, others separated by a
    blank line."""
    out: list[str] = []
    for previous, block in zip([None, *blocks], blocks, strict=False):
        if previous is not None:
            out.append("\n" if _tight(previous, block) else "\n\n")
        out.append(block.text)
    return "".join(out)


def _tight(previous: _Block, block: _Block) -> bool:
    if previous.kind == block.kind and block.kind in ("list", "code"):
        return True
    return previous.text.startswith("|") and block.text.startswith("|")
