"""Split cleaned Markdown into chunks that fit the embedding model's token window.

Markdown headings define sections; small neighbouring sections are packed together up to the
target size, so a heading with one line under it does not become a chunk of its own. A packed
span longer than the target is split by llama-index's ``SentenceSplitter``, counting the
model's own word pieces, with an overlap. Each chunk stores its text as it is in the document;
with ``ChunkSettings.heading_context`` it is embedded after its context, ``"title > heading >
sub-heading"`` on a line of its own (off by default: it lowered passage@5 in
``bench/retrieval_bench.py``). Whatever still exceeds the window (a huge table row, an unbroken
string) is cut into token windows: the model would silently truncate it otherwise.

Multi-vector chunks: with ``ChunkSettings.window_tokens``, a chunk longer than that also gets
``window_texts``, its consecutive sentence windows (same splitter, that size). Each is embedded
too and a search scores the chunk by its best vector: a question answered by one sentence finds
the chunk even when the rest of the chunk is about something else (the factor that cost the most
in ``bench/retrieval_bench.py``), while the chunk stored and returned stays whole.

Citations: ``headings`` is the heading path of the chunk's first line, outermost first; in
paged text (pages separated by ``\\f``: PDF pages, slides, sheets) ``page_start`` and
``page_end`` are the 1-based pages the chunk spans, else None.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.node_parser import SentenceSplitter

from genai_ingest.config import ChunkSettings
from genai_ingest.models import Chunk, chunk_id, sha256_hex

PAGE_BREAK = "\f"
CONTEXT_SEPARATOR = " > "
_HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE_RE = re.compile(r"^(?:```|~~~)", re.MULTILINE)
_SHRINK = 0.9  # budget factor when re-tokenised token windows still do not fit


@dataclass(frozen=True)
class _Span:
    """Text ``[start, end)`` of the document under the heading path ``path``."""

    start: int
    end: int
    path: tuple[str, ...]


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    text: str
    path: tuple[str, ...]
    context: str  # embedded before the text ("" if none, or if too long to fit)


class Chunker:
    """Section-aware, token-bounded chunking with stable chunk ids and citations."""

    def __init__(self, tokenizer: Any, settings: ChunkSettings, max_tokens: int) -> None:
        self._tokenizer = tokenizer
        self._encode = _native_encoder(tokenizer)
        self._settings = settings
        self._max_tokens = max_tokens
        self._special = len(self._ids("", special=True))
        if max_tokens <= self._special:
            raise ValueError(f"max_tokens {max_tokens} leaves no room for text")
        self._target = min(settings.chunk_tokens, max_tokens - self._special)

    # --- token counting ---------------------------------------------------------------------

    def _ids(self, text: str, *, special: bool) -> list[int]:
        if self._encode is not None:
            return self._encode(text, special)
        # verbose=False: no "Token indices sequence length is longer than ..." warning.
        return self._tokenizer(text, add_special_tokens=special, verbose=False)["input_ids"]

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - a window re-measures its chunk's sentences
    def _word_pieces(self, text: str) -> list[int]:
        """Tokenizer for ``SentenceSplitter``: word pieces without special tokens."""
        return self._ids(text, special=False)

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text``, [CLS]/[SEP] included."""
        return len(self._ids(text, special=True))

    def _count_many(self, texts: Sequence[str]) -> list[int]:
        """``count_tokens`` for many texts in one (batched, native) tokenizer call."""
        if not texts:
            return []
        encoded = self._tokenizer(list(texts), add_special_tokens=True, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one chunker per thread, few budgets
    def _splitter(self, budget: int) -> SentenceSplitter:
        return SentenceSplitter(
            chunk_size=budget,
            chunk_overlap=min(self._settings.overlap_tokens, budget // 4),
            tokenizer=self._word_pieces,
            include_prev_next_rel=False,
        )

    # --- splitting --------------------------------------------------------------------------

    def split(self, doc_id: str, text: str, metadata: dict, *, paged: bool = False) -> list[Chunk]:
        """Chunks of ``text`` in document order, each embedding within the model's window.

        ``paged``: the text comes from a paged format (pages separated by ``\\f``; a text
        without one is a single page)."""
        pages = _page_starts(text) if paged or PAGE_BREAK in text else None
        flat = text.replace(PAGE_BREAK, "\n")  # same offsets; a page break is a line break
        title = _title(metadata)
        pieces: list[_Piece] = []
        for span in self._packed(flat, _sections(flat)):
            pieces += self._split_span(flat, span, title)
        embedded = [f"{p.context}\n\n{p.text}" if p.context else p.text for p in pieces]
        counts = self._count_many(embedded)
        chunks = _build_chunks(doc_id, metadata, pieces, pages, embedded, counts)
        for chunk in chunks:
            chunk.window_texts = self.windows_of(chunk.text)
        return chunks

    def windows_of(self, text: str) -> list[str]:
        """Sentence windows of ``window_tokens`` word pieces, or none if the text is one."""
        size = self._settings.window_tokens
        if not size:
            return []
        windows = [w.strip() for w in self._splitter(size).split_text(text)]  # one if it fits
        windows = [w for w in windows if w]
        return windows if len(windows) > 1 else []

    def _context(self, title: str, path: tuple[str, ...]) -> str:
        if not self._settings.heading_context:
            return ""
        parts = [title] if title and title not in path[:1] else []
        return CONTEXT_SEPARATOR.join([*parts, *path])

    def _packed(self, text: str, spans: list[_Span]) -> list[_Span]:
        """Neighbouring sections joined while together they fit the target size; the packed
        span keeps the heading path of its first section with text under its heading."""
        if not self._settings.pack_sections:
            return spans
        counts = self._count_many([text[s.start : s.end] for s in spans])
        packed: list[_Span] = []
        size = 0
        for span, tokens in zip(spans, counts, strict=True):
            tokens -= self._special
            if packed and size + tokens <= self._target:
                last = packed[-1]
                path = last.path if _has_body(text[last.start : last.end]) else span.path
                packed[-1] = _Span(last.start, span.end, path)
                size += tokens
            else:
                packed.append(span)
                size = tokens
        return packed

    def _split_span(self, text: str, span: _Span, title: str) -> list[_Piece]:
        """The span as pieces within the window once its context is put before them."""
        body = text[span.start : span.end]
        context = self._context(title, span.path)
        context_tokens = len(self._ids(context + "\n\n", special=False)) if context else 0
        budget = self._target - context_tokens
        if budget < self._target // 2:  # a context this long is not worth the lost text
            context, context_tokens, budget = "", 0, self._target
        if self.count_tokens(body) - self._special <= budget:
            parts = [body.strip()]
        else:
            parts = self._splitter(budget).split_text(body)
        window = self._max_tokens - context_tokens
        pieces = []
        cursor = 0
        for part in (p.strip() for p in parts):
            if not part:
                continue
            found = body.find(part, cursor)
            start = found if found >= 0 else cursor
            cursor = start + 1
            for offset, piece in self._fit(part, window):
                begin = span.start + start + offset
                pieces.append(_Piece(begin, begin + len(piece), piece, span.path, context))
        return pieces

    def _fit(self, text: str, window: int) -> list[tuple[int, str]]:
        """(offset, piece) of ``text`` cut into consecutive token windows of at most ``window``
        tokens (special tokens included), preferring whitespace cuts; ``text`` itself if it fits.

        Text cut mid-word can re-tokenise into more pieces, so the result is checked and the
        window shrunk until every piece fits."""
        if self.count_tokens(text) <= window:
            return [(0, text)]
        encoded = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        offsets: list[tuple[int, int]] = encoded["offset_mapping"]
        budget = max(1, window - self._special)
        while True:
            cuts = [(offsets[a][0], offsets[b - 1][1]) for a, b in _windows(offsets, budget)]
            pieces = [(a, text[a:b]) for a, b in cuts if text[a:b].strip()]
            counts = self._count_many([p for _, p in pieces])
            if all(n <= window for n in counts) or budget == 1:
                return pieces
            budget = max(1, int(budget * _SHRINK))


def _native_encoder(tokenizer: Any) -> Any:
    """``(text, special) -> ids`` straight from a fast tokenizer's Rust backend (a private copy,
    never truncating), or None for a slow one. Same ids as calling the tokenizer, without the
    ~0.1 ms of Python it spends per call: ``SentenceSplitter`` measures every sentence."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    native = Tokenizer.from_str(backend.to_str())
    native.no_truncation()
    native.no_padding()
    return lambda text, special: native.encode(text, add_special_tokens=special).ids


def _sections(text: str) -> list[_Span]:
    """Spans from one Markdown heading to the next (code blocks' ``#`` lines are not headings),
    each with its heading path."""
    fences = [m.start() for m in _FENCE_RE.finditer(text)]
    spans: list[_Span] = []
    path: list[tuple[int, str]] = []  # (level, title)
    start = 0
    for match in _HEADING_RE.finditer(text):
        if bisect_right(fences, match.start()) % 2:  # inside a code block
            continue
        if match.start() > start:
            spans.append(_Span(start, match.start(), tuple(t for _, t in path)))
        level = len(match.group(1))
        path = [*(p for p in path if p[0] < level), (level, match.group(2).strip())]
        start = match.start()
    spans.append(_Span(start, len(text), tuple(t for _, t in path)))
    return [s for s in spans if text[s.start : s.end].strip()]


def _has_body(text: str) -> bool:
    """True if ``text`` has more than heading lines."""
    return bool(_HEADING_RE.sub("", text).strip())


def _page_starts(text: str) -> list[int]:
    """Offsets at which each page begins."""
    return [0, *(i + 1 for i, char in enumerate(text) if char == PAGE_BREAK)]


def _page_of(pages: list[int], offset: int) -> int:
    return bisect_right(pages, offset)


def _title(metadata: dict) -> str:
    """The document's title, else its file name."""
    title = str(metadata.get("title") or "").strip()
    if title:
        return title
    source = str(metadata.get("source") or "")
    return source.rstrip("/").rsplit("/", 1)[-1]


def _build_chunks(
    doc_id: str,
    metadata: dict,
    pieces: list[_Piece],
    pages: list[int] | None,
    embedded: list[str],
    counts: list[int],
) -> list[Chunk]:
    """Chunk records; the id counts earlier chunks of the same text (same bytes, same ids)."""
    seen: Counter[str] = Counter()
    chunks = []
    for index, (piece, embed_text, tokens) in enumerate(zip(pieces, embedded, counts, strict=True)):
        text_hash = sha256_hex(normalise_chunk_text(piece.text))
        chunks.append(
            Chunk(
                chunk_id=chunk_id(doc_id, text_hash, seen[text_hash]),
                doc_id=doc_id,
                index=index,
                text=piece.text,
                text_hash=text_hash,
                token_count=tokens,
                metadata=_chunk_metadata(metadata, piece, pages),
                embed_text=embed_text,
            )
        )
        seen[text_hash] += 1
    return chunks


def normalise_chunk_text(text: str) -> str:
    """The form a chunk's hash is taken of: NFC, whitespace runs collapsed, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _chunk_metadata(metadata: dict, piece: _Piece, pages: list[int] | None) -> dict[str, Any]:
    merged = dict(metadata)
    merged["headings"] = list(piece.path)
    if piece.path:
        merged["section"] = " / ".join(piece.path)
    merged["page_start"] = _page_of(pages, piece.start) if pages else None
    merged["page_end"] = _page_of(pages, max(piece.start, piece.end - 1)) if pages else None
    return merged


def _windows(offsets: list[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """Token index ranges of at most ``budget`` tokens, ending where whitespace follows if the
    window's second half has such a place."""
    windows = []
    start = 0
    while start < len(offsets):
        end = min(start + budget, len(offsets))
        if end < len(offsets):
            gaps = [
                k for k in range(end, start + budget // 2, -1) if offsets[k][0] > offsets[k - 1][1]
            ]
            end = gaps[0] if gaps else end
        windows.append((start, end))
        start = end
    return windows
