"""Judge a page's extracted text: is the text layer usable, broken, or in which script?

A PDF font without a correct Unicode map yields U+FFFD, private-use or control characters, or
"punctuation noise" (``!"#$%&'`` for every glyph); such a page is OCR'd or dropped, never
indexed. A good text layer in a script the OCR languages cannot read (Japanese, Arabic, ...)
is never replaced by OCR output in another script.
"""

from __future__ import annotations

import re
import unicodedata

_WORD_RE = re.compile(r"[^\W_]{2,}")
_MIN_TOKENS = 20
_MIN_WORDLIKE_SHARE = 0.25  # the corpus's maths/TOC pages have >= 0.45 tokens with a word
_MAX_BAD_SHARE = 0.3  # U+FFFD, controls and private-use characters
_BAD_CATEGORIES = {"Cc", "Co", "Cn"}
# Scripts by the first word of a character's Unicode name; kana and Han read as one "CJK".
_SCRIPT_ALIASES = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "HANGUL", "CJK": "CJK"}


def broken_reason(text: str) -> str | None:
    """Why a page's text is not text (a broken font map), or None if it reads as text."""
    visible = [char for char in text if not char.isspace()]
    if not visible:
        return None
    bad = sum(
        1 for char in visible if char == "\ufffd" or unicodedata.category(char) in _BAD_CATEGORIES
    )
    if bad > _MAX_BAD_SHARE * len(visible):
        return f"{bad / len(visible):.0%} unmapped, control or private-use characters"
    tokens = [token for token in text.split() if len(set(token)) > 1]  # not "....." leaders
    if len(tokens) >= _MIN_TOKENS:
        wordlike = sum(1 for token in tokens if _WORD_RE.search(token)) / len(tokens)
        if wordlike < _MIN_WORDLIKE_SHARE:
            return f"punctuation noise (only {wordlike:.0%} of the tokens hold a word)"
    return None


def main_script(text: str) -> str | None:
    """The script most letters of ``text`` are in (LATIN, CYRILLIC, CJK, ARABIC, ...)."""
    counts: dict[str, int] = {}
    for char in text[:5000]:
        if char.isalpha():
            script = unicodedata.name(char, "?").split(" ", 1)[0]
            script = _SCRIPT_ALIASES.get(script, script)
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None
