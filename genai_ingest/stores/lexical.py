"""The words a lexical (BM25) search looks for, the same in every store.

A query is split into its distinct words (Unicode word characters, case-folded: what FTS5's
``unicode61`` tokenizer and Elasticsearch's standard analyzer index for alphabetic scripts).
Words found in at least half of the chunks ("the", "what") are left out: FTS5's BM25 gives
them no weight (its IDF is clamped to 1e-6 there), Elasticsearch's at most ln 2 against ~10
for a rare word, yet they match most rows, which is what a BM25 query costs. Both stores drop
them, from their own document frequencies, so both rank on the same words."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def query_terms(text: str) -> list[str]:
    """The distinct words of a free-text query, case-folded, in order."""
    return list(dict.fromkeys(_WORD.findall(text.casefold())))


def informative_terms(terms: list[str], frequency: dict[str, int], chunks: int) -> list[str]:
    """The terms found in fewer than half of the ``chunks`` (``frequency``: how many chunks
    hold each term)."""
    return [term for term in terms if 2 * frequency.get(term, 0) < chunks]
