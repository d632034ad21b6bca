"""Split cleaned Markdown into chunks that fit the embedding model's token window.

Markdown headings define sections (``MarkdownNodeParser``); a section longer than the target
size is split by llama-index's ``SentenceSplitter``, counting the model's own word pieces. Chunks
never cross a section boundary, so editing one section leaves the chunk ids of every other
section unchanged. Whatever still exceeds the window (a huge table row, an unbroken string) is
cut into token windows: the model would silently truncate it otherwise.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core import Document
from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

from genai_ingest.config import ChunkSettings
from genai_ingest.models import Chunk, chunk_id, sha256_hex

_PATH_SEPARATOR = "\x1f"  # cannot occur in cleaned text, unlike "/"
_HEADING_RE = re.compile(r"#+\s+(.*)")
_SHRINK = 0.9  # budget factor when re-tokenised token windows still do not fit


@dataclass(frozen=True)
class _Section:
    path: tuple[str, ...]
    text: str


class Chunker:
    """Section-aware, token-bounded chunking with stable chunk ids."""

    def __init__(self, tokenizer: Any, settings: ChunkSettings, max_tokens: int) -> None:
        self._tokenizer = tokenizer
        self._max_tokens = max_tokens
        self._special = len(self._ids("", special=True))
        if max_tokens <= self._special:
            raise ValueError(f"max_tokens {max_tokens} leaves no room for text")
        target = min(settings.chunk_tokens, max_tokens - self._special)
        self._target = target
        self._markdown = MarkdownNodeParser(
            include_metadata=True,
            include_prev_next_rel=False,
            header_path_separator=_PATH_SEPARATOR,
        )
        self._splitter = SentenceSplitter(
            chunk_size=target,
            chunk_overlap=min(settings.overlap_tokens, target // 2),
            tokenizer=self._word_pieces,
            include_prev_next_rel=False,
        )

    # --- token counting ---------------------------------------------------------------------

    def _ids(self, text: str, *, special: bool) -> list[int]:
        # verbose=False: no "Token indices sequence length is longer than ..." warning.
        return self._tokenizer(text, add_special_tokens=special, verbose=False)["input_ids"]

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

    # --- splitting --------------------------------------------------------------------------

    def split(self, doc_id: str, text: str, metadata: dict) -> list[Chunk]:
        """Chunks of ``text`` in document order, each within the model's token window."""
        paths: list[tuple[str, ...]] = []
        parts: list[str] = []
        sections = self._sections(text)
        for section, tokens in zip(
            sections, self._count_many([s.text for s in sections]), strict=True
        ):
            for part in self._split_section(section.text, tokens):
                paths.append(section.path)
                parts.append(part)
        pieces = [
            (path, piece, tokens)
            for path, fitted in zip(paths, self._fit(parts), strict=True)
            for piece, tokens in fitted
        ]
        return _build_chunks(doc_id, metadata, pieces)

    def _split_section(self, text: str, tokens: int) -> list[str]:
        """The section as it is if within the target size, else ``SentenceSplitter`` pieces."""
        parts = (
            [text] if tokens - self._special <= self._target else self._splitter.split_text(text)
        )
        return [part.strip() for part in parts if part.strip()]

    def _sections(self, text: str) -> list[_Section]:
        """Markdown sections; a heading directly followed by a sub-heading joins that section."""
        nodes = self._markdown.get_nodes_from_documents([Document(text=text)])
        sections: list[_Section] = []
        pending, pending_path = "", ()
        for node in nodes:
            body = node.get_content()
            parent = tuple(p for p in node.metadata["header_path"].split(_PATH_SEPARATOR) if p)
            heading = _HEADING_RE.fullmatch(body.split("\n", 1)[0])
            path = (*parent, heading.group(1).strip()) if heading else parent
            if heading and "\n" not in body.strip():
                pending, pending_path = pending + body.strip() + "\n", path
                continue
            sections.append(_Section(path, pending + body))
            pending = ""
        if pending:
            sections.append(_Section(pending_path, pending.strip()))
        return sections

    def _fit(self, parts: list[str]) -> list[list[tuple[str, int]]]:
        """Each part as (piece, tokens) pieces that fit the window (token-window slicing)."""
        counts = self._count_many(parts)
        return [
            [(part, count)] if count <= self._max_tokens else self._slice(part)
            for part, count in zip(parts, counts, strict=True)
        ]

    def _slice(self, text: str) -> list[tuple[str, int]]:
        """Cut ``text`` into consecutive token windows that fit, preferring whitespace cuts.

        Text cut mid-word can re-tokenise into more pieces, so the result is checked and the
        window shrunk until every piece fits."""
        encoded = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        offsets: list[tuple[int, int]] = encoded["offset_mapping"]
        budget = self._max_tokens - self._special
        while True:
            pieces = [
                text[offsets[start][0] : offsets[end - 1][1]].strip()
                for start, end in _windows(offsets, budget)
            ]
            pieces = [piece for piece in pieces if piece]
            counts = self._count_many(pieces)
            if all(n <= self._max_tokens for n in counts) or budget == 1:
                return list(zip(pieces, counts, strict=True))
            budget = max(1, int(budget * _SHRINK))


def _build_chunks(
    doc_id: str, metadata: dict, pieces: list[tuple[tuple[str, ...], str, int]]
) -> list[Chunk]:
    """Chunk records; the id counts earlier chunks of the same text (same bytes, same ids)."""
    seen: Counter[str] = Counter()
    chunks = []
    for index, (path, text, tokens) in enumerate(pieces):
        text_hash = sha256_hex(normalise_chunk_text(text))
        chunks.append(
            Chunk(
                chunk_id=chunk_id(doc_id, text_hash, seen[text_hash]),
                doc_id=doc_id,
                index=index,
                text=text,
                text_hash=text_hash,
                token_count=tokens,
                metadata=_chunk_metadata(metadata, path),
            )
        )
        seen[text_hash] += 1
    return chunks


def normalise_chunk_text(text: str) -> str:
    """The form a chunk's hash is taken of: NFC, whitespace runs collapsed, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _chunk_metadata(metadata: dict, path: tuple[str, ...]) -> dict[str, Any]:
    merged = dict(metadata)
    if path:
        merged["section"] = " / ".join(path)
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
