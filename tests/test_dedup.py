"""MinHash near-duplicate detection on real corpus documents."""

from __future__ import annotations

import html
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from genai_ingest.config import DedupSettings
from genai_ingest.failures.policies import DelayedReplayPolicy
from genai_ingest.run.redelivery import outage_failures
from genai_ingest.text.dedup import (
    Candidate,
    DuplicateDecision,
    MinHasher,
    canonical_rank,
    find_duplicate,
    jaccard,
    lsh_params,
    matching,
    normalized_text_hash,
    signature_from_bytes,
    signature_to_bytes,
)

CORPUS = Path(__file__).parent / "data" / "corpus"
SETTINGS = DedupSettings()
HASHER = MinHasher(SETTINGS)
UNRELATED = [
    "good/text/docling_duck.md",
    "good/text/docling_wiki.md",
    "good/text/unstructured_book-war-and-peace-1p.txt",
    "good/text/unstructured_norwich-city.txt",
    "good/text/unstructured_README.rst",
    "good/text/docling_asciidoc_02.asciidoc",
    "good/text/unstructured_eng_spa_mult.md",
]


def corpus_text(relative: str) -> str:
    path = CORPUS / relative
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".html":
        text = html.unescape(re.sub(r"(?s)<[^>]+>", " ", text))
    return text


def candidate(id_: str, text: str) -> Candidate:
    return Candidate(id=id_, text_hash=normalized_text_hash(text), signature=HASHER.signature(text))


def test_lightly_edited_copy_is_a_near_duplicate() -> None:
    duck = corpus_text("good/text/docling_duck.md")
    edited = duck.replace("try not to drown", "try not to sink")
    assert edited != duck
    similarity = jaccard(HASHER.signature(duck), HASHER.signature(edited))
    assert SETTINGS.document_threshold <= similarity < 1.0
    decision = find_duplicate(
        normalized_text_hash(edited),
        HASHER.signature(edited),
        [candidate("duck", duck), candidate("wiki", corpus_text("good/text/docling_wiki.md"))],
        SETTINGS.document_threshold,
    )
    assert decision is not None
    assert (decision.duplicate_of, decision.kind) == ("duck", "near")


def test_same_text_in_markdown_and_html_is_an_exact_duplicate() -> None:
    markdown = corpus_text("good/text/unstructured_eng_spa_mult.md")
    page = corpus_text("good/html/unstructured_eng_spa_mult.html")
    assert markdown != page
    decision = find_duplicate(
        normalized_text_hash(page), HASHER.signature(page), [candidate("md", markdown)], 0.9
    )
    assert decision == DuplicateDecision("md", "exact", 1.0)


def test_unrelated_documents_are_not_duplicates() -> None:
    signatures = {name: HASHER.signature(corpus_text(name)) for name in UNRELATED}
    for a, b in combinations(UNRELATED, 2):
        assert jaccard(signatures[a], signatures[b]) < 0.2, (a, b)
        keys_a = set(HASHER.band_keys(signatures[a], SETTINGS.document_threshold))
        assert keys_a.isdisjoint(HASHER.band_keys(signatures[b], SETTINGS.document_threshold))


def test_near_duplicates_share_a_band_key() -> None:
    text = corpus_text("good/text/docling_wiki.md")
    edited = text.replace("nicknamed Big Blue", "nicknamed the Big Blue", 1)
    a, b = HASHER.signature(text), HASHER.signature(edited)
    assert jaccard(a, b) >= 0.95
    keys = HASHER.band_keys(a, SETTINGS.document_threshold)
    bands, rows = lsh_params(SETTINGS.document_threshold, SETTINGS.num_perm)
    assert len(keys) == bands and bands * rows <= SETTINGS.num_perm
    assert all(re.fullmatch(r"b\d+:[0-9a-f]{16}", key) for key in keys)
    assert set(keys) & set(HASHER.band_keys(b, SETTINGS.document_threshold))


def test_band_keys_depend_on_threshold() -> None:
    signature = HASHER.signature(corpus_text("good/text/docling_duck.md"))
    assert lsh_params(0.9, 128) != lsh_params(0.95, 128)
    assert set(HASHER.band_keys(signature, 0.9)).isdisjoint(HASHER.band_keys(signature, 0.95))


def test_exact_hash_ignores_case_whitespace_and_punctuation() -> None:
    text = corpus_text("good/text/unstructured_book-war-and-peace-1p.txt")
    variant = re.sub(r"[,.;:!?]", "", text.upper()).replace("\n", "  \n ")
    assert normalized_text_hash(variant) == normalized_text_hash(text)
    assert normalized_text_hash(text + " extra") != normalized_text_hash(text)


def test_exact_match_wins_and_ties_break_on_smallest_id() -> None:
    duck = corpus_text("good/text/docling_duck.md")
    near = duck.replace("Paddle about", "Paddle around")
    candidates = [candidate("z-near", near), candidate("b-exact", duck), candidate("a-exact", duck)]
    sig = HASHER.signature(duck)
    for order in (candidates, candidates[::-1]):
        assert find_duplicate(normalized_text_hash(duck), sig, order, 0.9) == DuplicateDecision(
            "a-exact", "exact", 1.0
        )
    nears = [candidate("n2", near), candidate("n1", near)]
    for order in (nears, nears[::-1]):
        decision = find_duplicate("no-hash", sig, order, 0.9)
        assert decision is not None
        assert (decision.duplicate_of, decision.kind) == ("n1", "near")


def test_no_duplicate_below_threshold() -> None:
    duck = corpus_text("good/text/docling_duck.md")
    wiki = candidate("wiki", corpus_text("good/text/docling_wiki.md"))
    assert find_duplicate(normalized_text_hash(duck), HASHER.signature(duck), [wiki], 0.9) is None
    assert find_duplicate("h", HASHER.signature(duck), [], 0.9) is None


def test_short_and_empty_texts() -> None:
    short = HASHER.signature("Hello world")
    assert short.shape == (SETTINGS.num_perm,)
    assert jaccard(short, HASHER.signature("hello,  WORLD!")) == 1.0
    assert jaccard(short, HASHER.signature("goodbye world")) < 0.2
    assert HASHER.signature("").shape == (SETTINGS.num_perm,)


def test_signature_bytes_round_trip() -> None:
    signature = HASHER.signature(corpus_text("good/text/docling_wiki.md"))
    data = signature_to_bytes(signature)
    assert len(data) == 4 * SETTINGS.num_perm
    restored = signature_from_bytes(data)
    assert restored.dtype == np.uint32
    assert np.array_equal(restored, signature)
    assert restored.flags.writeable


def test_jaccard_rejects_mismatched_signatures() -> None:
    with pytest.raises(ValueError, match="different or zero length"):
        jaccard(np.zeros(128, np.uint32), np.zeros(64, np.uint32))


def test_the_copy_kept_is_ranked_by_source_uri_then_doc_id() -> None:
    twin = "file:///c/unstructured_example-steelJIS-datasheet-utf-16.html"
    original = "file:///c/unstructured_example-steelJIS-datasheet.html"
    assert canonical_rank(twin, "ffff") < canonical_rank(original, "0000"), "'-' sorts before '.'"
    assert canonical_rank(original, "a") < canonical_rank(original, "b")
    assert Candidate("x", "h", np.zeros(4), "d1", twin).rank == (twin, "d1")


def test_matching_is_symmetric_and_finds_exact_and_near_copies() -> None:
    text = corpus_text("good/text/docling_duck.md")
    edited = text.replace("duck", "drake", 1)
    a, b = candidate("a", text), candidate("b", edited)
    unrelated = candidate("c", "A note on the history of the word processor. " * 20)
    assert [c.id for c in matching(a.text_hash, a.signature, [b, unrelated], 0.8)] == ["b"]
    assert [c.id for c in matching(b.text_hash, b.signature, [a, unrelated], 0.8)] == ["a"]
    exact = candidate("e", text.upper())
    assert [c.id for c in matching(a.text_hash, a.signature, [exact], 1.0)] == ["e"]


def test_only_outage_failures_are_replayed_after_the_run() -> None:
    failures = [
        {"doc_id": "b", "error_class": "circuit_open"},
        {"doc_id": "a", "error_class": "store_unavailable"},
        {"doc_id": "a", "error_class": "store_unavailable"},
        {"doc_id": "c", "error_class": "password_required"},
        {"doc_id": "d", "error_class": "timeout"},
    ]
    assert outage_failures(failures, DelayedReplayPolicy()) == ["a", "b"]
    assert outage_failures(failures, DelayedReplayPolicy(after_run=False)) == []
