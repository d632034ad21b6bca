"""Benchmark: genai-ingest on a corpus, side by side with its floors and a baseline.

Phases (each in its own subprocess, so peak RSS is per phase):

1. ``ingest``: the ``ingest`` Prefect flow over the corpus into a fresh data dir.
2. ``rerun``: the same run again, nothing changed (must embed and write nothing).
3. ``encode``: a raw encode of the same chunk texts, same batch size, by the project's chosen
   encoder (the floor for the embedding stage) and by ``SentenceTransformer.encode`` (torch).
4. ``llamaindex``: LlamaIndex ``IngestionPipeline`` (markdown + sentence splitting, same model,
   same batch size) over the same parsed, cleaned text.

Usage: ``python bench/ingest_bench.py [CORPUS ...] [--batch-size 32]``; prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "good"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def settings_for(data_dir: Path, batch_size: int) -> Any:
    from genai_ingest.config import Settings

    settings = Settings(data_dir=data_dir)  # GENAI_INGEST_* overrides apply
    embed = settings.embed.model_copy(update={"batch_size": batch_size})
    return settings.model_copy(update={"embed": embed})


def phase_ingest(corpus: list[str], data_dir: Path, batch_size: int) -> dict[str, Any]:
    from flows.ingest import ingest
    from genai_ingest.run.local_server import prefect_api
    from genai_ingest.run.runtime import runtime_for

    settings = settings_for(data_dir, batch_size)
    t0 = time.perf_counter()
    runtime_for(settings)  # model load, reported apart from the run itself
    load_s = time.perf_counter() - t0
    # the CLI's Prefect API (the local server, started once), not a temporary one per phase
    with prefect_api(settings.policies.local_server, notify=lambda m: print(m, file=sys.stderr)):
        t0 = time.perf_counter()
        report = ingest(sources=corpus, settings=settings)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "model_load_s": load_s, "report": report}


def chunk_texts(data_dir: Path) -> list[str]:
    conn = sqlite3.connect(data_dir / "genai-ingest.db")
    rows = conn.execute("SELECT json_extract(fields, '$.text') FROM chunks ORDER BY chunk_id")
    return [r[0] for r in rows]


def phase_encode(data_dir: Path, batch_size: int) -> dict[str, Any]:
    """Raw encodes by the chosen encoder: the chunk texts alone, then every vector the run
    computes (chunks and their windows, as ``embed.window_pooling`` says); then torch."""
    from sentence_transformers import SentenceTransformer

    from genai_ingest.embed.encoders import EmbedUnit, embed_units
    from genai_ingest.embed.local import resolve_model_path
    from genai_ingest.run.runtime import Runtime

    texts = chunk_texts(data_dir)
    rt = Runtime(settings_for(Path(tempfile.mkdtemp()), batch_size))
    chosen = rt.embedder
    units = [EmbedUnit(text, tuple(rt.chunker.windows_of(text))) for text in texts]
    t0 = time.perf_counter()
    chosen.embed(texts)
    chosen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = embed_units(chosen, units, rt.encoder.windows)
    every_s = time.perf_counter() - t0
    model = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"))
    t0 = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    torch_s = time.perf_counter() - t0
    return {
        "wall_s": chosen_s,
        "every_s": every_s,
        "vectors": sum(len(r) for r in rows),
        "torch_s": torch_s,
        "encoder": rt.model_id,
        "chunks": len(texts),
    }


def parsed_corpus(corpus: list[str]) -> list[tuple[str, str]]:
    """(uri, cleaned text) of every document our parser reads, for the baseline."""
    from genai_ingest.config import Settings
    from genai_ingest.parse.document import parse_document
    from genai_ingest.sources.discovery import discover
    from genai_ingest.text.clean import clean_text

    settings = Settings()
    docs = []
    for ref in discover(corpus, settings.sources):
        path = Path(ref.uri.removeprefix("file://"))
        try:
            parsed = parse_document(path.read_bytes(), ref.name, settings.parse, uri=ref.uri)
        except Exception:
            continue
        docs.append((ref.uri, clean_text(parsed.text, settings.clean)))
    return docs


def phase_llamaindex(corpus: list[str], batch_size: int) -> dict[str, Any]:
    from llama_index.core import Document
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter
    from sentence_transformers import SentenceTransformer

    from genai_ingest.embed.local import resolve_model_path

    t0 = time.perf_counter()
    docs = parsed_corpus(corpus)
    parse_s = time.perf_counter() - t0
    model = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"))

    class STEmbedding(BaseEmbedding):
        """The same model behind LlamaIndex's embedding interface."""

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return model.encode(texts, batch_size=batch_size, normalize_embeddings=True).tolist()

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._get_text_embeddings([text])[0]

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._get_text_embedding(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    pipeline = IngestionPipeline(
        transformations=[
            MarkdownNodeParser(),
            SentenceSplitter(chunk_size=200, chunk_overlap=24),
            STEmbedding(embed_batch_size=batch_size),
        ]
    )
    documents = [Document(text=text, id_=uri) for uri, text in docs]
    t0 = time.perf_counter()
    nodes = pipeline.run(documents=documents)
    return {
        "wall_s": time.perf_counter() - t0,
        "parse_s": parse_s,
        "documents": len(documents),
        "chunks": len(nodes),
    }


def run_phase(args: list[str]) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; returns its JSON result with its peak RSS."""
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "ERROR", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--phase", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"phase {args[0]} failed:\n{out.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="*", default=[str(DEFAULT_CORPUS)])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        data_dir = Path(args.data_dir)
        result = {
            "ingest": lambda: phase_ingest(args.corpus, data_dir, args.batch_size),
            "rerun": lambda: phase_ingest(args.corpus, data_dir, args.batch_size),
            "encode": lambda: phase_encode(data_dir, args.batch_size),
            "llamaindex": lambda: phase_llamaindex(args.corpus, args.batch_size),
        }[args.phase]()
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result, default=str))
        return
    data_dir = Path(tempfile.mkdtemp(prefix="genai-ingest-bench-"))
    common = ["--data-dir", str(data_dir), "--batch-size", str(args.batch_size), *args.corpus]
    results = {
        name: run_phase([name, *common]) for name in ("ingest", "rerun", "encode", "llamaindex")
    }
    print_table(results, args)


def print_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    first, again = results["ingest"], results["rerun"]
    report = first["report"]
    docs, chunks = (
        report["documents_indexed"] + report["documents_duplicate"],
        report["chunks_written"],
    )
    encode, li = results["encode"], results["llamaindex"]
    li_full = li["wall_s"] + li["parse_s"]
    print(f"corpus: {', '.join(args.corpus)}   batch size: {args.batch_size}")
    print(
        f"encoder: {encode['encoder']} (floor: the chunk texts alone; every vector:"
        f" {encode['vectors']} rows, chunks and windows as the encoder makes them)"
    )
    print(
        f"documents seen {report['documents_seen']}, indexed {report['documents_indexed']},"
        f" duplicate {report['documents_duplicate']}, failed {report['documents_failed']};"
        f" chunks written {chunks}, duplicate chunks {report['chunks_duplicate']},"
        f" embeddings computed {report['embeddings_computed']}"
    )
    rows = [
        (
            "genai-ingest run",
            first["wall_s"],
            docs / first["wall_s"],
            chunks / first["wall_s"],
            first["peak_rss_mb"],
        ),
        (
            "genai-ingest re-run (unchanged)",
            again["wall_s"],
            report["documents_seen"] / again["wall_s"],
            0.0,
            again["peak_rss_mb"],
        ),
        (
            "raw encode, same chunks (floor)",
            encode["wall_s"],
            float("nan"),
            encode["chunks"] / encode["wall_s"],
            encode["peak_rss_mb"],
        ),
        (
            "raw encode, every vector of the run",
            encode["every_s"],
            float("nan"),
            encode["chunks"] / encode["every_s"],
            encode["peak_rss_mb"],
        ),
        (
            "raw encode, same chunks, torch",
            encode["torch_s"],
            float("nan"),
            encode["chunks"] / encode["torch_s"],
            encode["peak_rss_mb"],
        ),
        (
            "LlamaIndex IngestionPipeline",
            li["wall_s"],
            li["documents"] / li["wall_s"],
            li["chunks"] / li["wall_s"],
            li["peak_rss_mb"],
        ),
        (
            "LlamaIndex full (parse+chunk+embed)",
            li_full,
            li["documents"] / li_full,
            li["chunks"] / li_full,
            li["peak_rss_mb"],
        ),
    ]
    print(f"\n{'':34} {'wall s':>9} {'docs/s':>8} {'chunks/s':>9} {'peak RSS MB':>12}")
    for name, wall, dps, cps, rss in rows:
        print(f"{name:34} {wall:9.2f} {dps:8.2f} {cps:9.1f} {rss:12.0f}")
    print(
        f"\nmodel load (excluded above): {first['model_load_s']:.1f} s;"
        f" LlamaIndex parse+clean (excluded above): {li['parse_s']:.1f} s"
    )
    print("stage seconds (summed over worker threads):")
    for stage, seconds in report["stage_seconds"].items():
        print(f"  {stage:10} {seconds:8.2f}")
    embed_s = report["stage_seconds"].get("embed", float("nan"))
    print("\nratios:")
    print(
        f"  embed stage / raw encode floor:        {embed_s / encode['wall_s']:.2f} (target 1.1);"
        f" / every vector's raw encode: {embed_s / encode['every_s']:.2f}"
    )
    print(f"  end-to-end / raw encode floor:          {first['wall_s'] / encode['wall_s']:.2f}")
    print(
        f"  re-run / first run:                     {again['wall_s'] / first['wall_s']:.3f}"
        f" (embeddings computed on re-run: {again['report']['embeddings_computed']},"
        f" chunks written: {again['report']['chunks_written']})"
    )
    print(
        f"  genai-ingest run / LlamaIndex (chunk+embed only): {first['wall_s'] / li['wall_s']:.2f}"
    )
    print(f"  embed stage / raw torch encode:         {embed_s / encode['torch_s']:.2f}")
    print(
        f"  vectors computed / chunks written:      {report['embeddings_computed'] / chunks:.2f}"
        " (chunk + windows; pooled windows need no pass of their own)"
    )
    print(
        f"  genai-ingest run / LlamaIndex full wall: {first['wall_s'] / li_full:.2f} (target 0.5)"
    )


if __name__ == "__main__":
    main()
