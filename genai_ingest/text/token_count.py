"""Count a BERT tokenizer's word pieces without tokenising the same words again and again.

``SentenceSplitter`` measures a text, then its paragraphs, then their sentences, and the windows
measure those sentences again: the chunk stage spent most of its time in the tokenizer. A BERT
tokenizer cuts its text at whitespace before anything else and turns each word into pieces on
its own, so a text's count is the sum of its words' counts, and each distinct word is tokenised
once. The count is exact (``tests/test_chunk.py`` compares it with the tokenizer's); a tokenizer
of another kind, or a text with a character that ``str.split`` and BERT disagree about, is
counted by the tokenizer itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

# Whitespace to ``str.split`` but control characters that BERT's normalizer deletes.
_SPLIT_DISAGREES = re.compile(r"[\x0b\x0c\x1c-\x1f\x85]")
_CACHED_WORD_CHARS = 64  # longer words (rare) are counted each time, not kept
_CACHE_WORDS = 100_000  # about 15 MB; the cache starts again when full


class WordPieceCounter:
    """``len(tokenizer(text))`` (no special tokens), summed word by word for a BERT tokenizer."""

    def __init__(self, backend_json: str | None, encode: Callable[[str], list[int]]) -> None:
        """``backend_json``: the fast tokenizer's definition (None for a slow tokenizer)."""
        spec = json.loads(backend_json) if backend_json else {"pre_tokenizer": None}
        self._additive = _kind(spec, "normalizer") in {None, "BertNormalizer"} and _kind(
            spec, "pre_tokenizer"
        ) in {"BertPreTokenizer", "WhitespaceSplit"}
        self._encode = encode
        self._words: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        if not self._additive or _SPLIT_DISAGREES.search(text):
            return len(self._encode(text))
        words = text.split()
        try:
            return sum(map(self._words.__getitem__, words))
        except KeyError:
            new = set(words).difference(self._words)
            if len(self._words) + len(new) > _CACHE_WORDS:
                self._words.clear()
                new = set(words)
            counts = {word: len(self._encode(word)) for word in new}
            self._words.update(
                (word, n) for word, n in counts.items() if len(word) <= _CACHED_WORD_CHARS
            )
            return sum(counts[word] if word in counts else self._words[word] for word in words)


def _kind(spec: dict[str, Any], part: str) -> str | None:
    value = spec.get(part)
    return value.get("type") if value else None
