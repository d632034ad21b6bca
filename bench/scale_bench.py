"""Scaling benchmark: per-document costs for the capacity model (docs/scaling.md), and one
worker against two on the same corpus, side by side, in one run.

Phases:

1. ``costs`` (plain functions, no Prefect, parsing in-process after a warm-up document): per
   document, the wall time of each stage (``genai_ingest.run.prepare``'s stage timers) and the CPU
   time of the whole preparation (``time.process_time``: CPU-seconds are what pods are sized
   by, and on a shared machine they are far less inflated by other load than wall time),
   with the page count of PDFs; then the embedding of every chunk (CPU, one batched pass),
   the embedded store's upsert, and, with ``ELASTICSEARCH_URL`` set, an Elasticsearch bulk
   upsert of the same chunks.
2. ``prefect``: the ``ingest`` flow in-process on the same corpus, counting the HTTP requests
   to the Prefect API and the events it emits, per batch of ``documents_per_batch``.
3. ``workers``: ``genai-ingest run`` on the corpus, one process into a fresh data dir, then two
   processes started 2 s apart into another (claims split the work); wall time, embeddings
   computed, index digests.

Usage: ``python bench/scale_bench.py [FILES_OR_FOLDERS ...] [--phases costs,prefect,workers]``
(default: a mixed subset of ``../shared/corpus/good``, every phase); prints tables with the
load average seen, since other work on the machine skews every wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
GOOD = REPO.parent / "shared" / "corpus" / "good"
SUBSET = [
    "pdf/docling_multi_page.pdf",
    "pdf/unstructured_fr_olap.pdf",
    "pdf/pdfplumber_federal-register-2020-17221.pdf",
    "pdf/docling_code_and_formula.pdf",
    "pdf/pypdf_GeoBase_NHNC1_Data_Model_UML_EN.pdf",
    "scan/docling_ocr_test.pdf",
    "docx/docling_word_sample.docx",
    "docx/unstructured_docx-tables.docx",
    "pptx/docling_powerpoint_sample.pptx",
    "pptx/unstructured_sample-presentation.pptx",
    "sheet/unstructured_vodafone.xlsx",
    "sheet/docling_csv-comma.csv",
    "html/docling_wiki_duck.html",
    "html/unstructured_example-10k-1p.html",
    "text/docling_wiki.md",
    "text/unstructured_norwich-city.txt",
]
BIN = Path(sys.executable).parent


def pdf_pages(data: bytes) -> int | None:
    import pypdfium2

    try:
        return len(pypdfium2.PdfDocument(data))
    except Exception:
        return None


def phase_costs(sources: list[str], data_dir: Path) -> dict[str, Any]:
    """Per-document stage times, then per-chunk embed and store costs."""
    from genai_ingest.config import Settings
    from genai_ingest.models import EmbeddedChunk
    from genai_ingest.run.prepare import Prepared, prepare
    from genai_ingest.run.runtime import runtime_for
    from genai_ingest.run.summary import RunSummary
    from genai_ingest.sources.discovery import discover

    settings = Settings(data_dir=data_dir, parse={"isolate": False})
    rt = runtime_for(settings)
    prepare(
        *discover([str(REPO / "samples" / "docling_wiki.md")], settings.sources), rt, RunSummary()
    )
    docs, rows = [], []
    for ref in discover(sources, settings.sources):
        summary = RunSummary()
        cpu = time.process_time()
        outcome = prepare(ref, rt, summary)
        cpu = time.process_time() - cpu
        if not isinstance(outcome, Prepared):
            continue
        rt.claims.release([ref.doc_id])
        docs.append(outcome)
        stages = summary.stage_seconds
        rows.append(
            {
                "name": ref.name,
                "format": outcome.format,
                "pages": pdf_pages(outcome.raw.data) if outcome.format == "pdf" else None,
                "kb": len(outcome.raw.data) / 1024,
                "chunks": len(outcome.chunks),
                "parse_s": stages.get("parse", 0.0),
                "chunk_s": stages.get("chunk", 0.0) + stages.get("clean", 0.0),
                "dedup_s": stages.get("dedup", 0.0) + stages.get("validate", 0.0),
                "cpu_s": cpu,
                "parse_cpu_s": cpu * stages.get("parse", 0.0) / max(sum(stages.values()), 1e-9),
            }
        )
    chunks = [c for d in docs for c in d.chunks]
    start, cpu = time.perf_counter(), time.process_time()
    vectors = rt.embedder.embed([c.text for c in chunks])
    embed_s, embed_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    items = [EmbeddedChunk(c, v) for c, v in zip(chunks, vectors, strict=True)]
    start = time.perf_counter()
    rt.store.upsert_chunks(items)
    sqlite_s = time.perf_counter() - start
    out = {
        "docs": rows,
        "chunks": len(chunks),
        "embed_s": embed_s,
        "embed_cpu_s": embed_cpu_s,
        "sqlite_s": sqlite_s,
    }
    if os.environ.get("ELASTICSEARCH_URL"):
        out["es_s"], out["es_bytes"] = _es_upsert(
            items, rt.embedder.model_id, rt.embedder.dimension
        )
    return out


def _es_upsert(items: list[Any], model_id: str, dimension: int) -> tuple[float, float]:
    """Seconds to bulk-upsert ``items`` into a fresh alias on the live node, and the index's
    bytes per chunk after a force-merge (the alias is dropped afterwards)."""
    from genai_ingest.config import Settings
    from genai_ingest.stores.elasticsearch import ElasticsearchVectorStore

    alias = f"scale-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(store_url=os.environ["ELASTICSEARCH_URL"], elasticsearch={"index": alias})
    store = ElasticsearchVectorStore.from_settings(settings)
    store.ensure_index(model_id, dimension)
    try:
        start = time.perf_counter()
        store.upsert_chunks(items)
        seconds = time.perf_counter() - start
        index = store.write_index
        store.client.indices.forcemerge(index=index, max_num_segments=1)
        store.client.indices.refresh(index=index)
        size = store.client.indices.stats(index=index)["_all"]["primaries"]["store"]
        return seconds, size["size_in_bytes"] / len(items)
    finally:
        store.drop()


def phase_prefect(sources: list[str], data_dir: Path) -> dict[str, Any]:
    """The ingest flow in-process, counting Prefect API requests and emitted events."""
    import httpx
    from prefect.events.clients import EventsClient

    from flows.ingest import ingest
    from genai_ingest.config import Settings
    from genai_ingest.run.runtime import runtime_for

    settings = Settings(data_dir=data_dir)
    runtime_for(settings)  # model load outside the count
    counts: dict[str, int] = defaultdict(int)
    api = os.environ["PREFECT_API_URL"]

    def counting(send: Any) -> Any:
        def wrapper(self: Any, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
            if str(request.url).startswith(api):
                counts["http"] += 1
            return send(self, request, *args, **kwargs)

        return wrapper

    emit = EventsClient.emit

    async def counting_emit(self: Any, event: Any) -> None:
        counts["events"] += 1
        await emit(self, event)

    httpx.Client.send = counting(httpx.Client.send)  # type: ignore[method-assign]
    httpx.AsyncClient.send = counting(httpx.AsyncClient.send)  # type: ignore[method-assign]
    EventsClient.emit = counting_emit  # type: ignore[method-assign]
    start = time.perf_counter()
    report = ingest(sources=sources, settings=settings)
    wall = time.perf_counter() - start
    time.sleep(3)  # let the events worker flush
    batches = -(-report["documents_seen"] // settings.documents_per_batch)
    return {"wall_s": wall, "batches": batches, **counts}


def _run(env: dict[str, str], sources: list[str], data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "genai-ingest"), "run", *sources, "--json", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"genai-ingest run failed:\n{err[-2000:]}")
    return json.loads(out)


def _digest(env: dict[str, str], data_dir: Path) -> str:
    done = subprocess.run(
        [str(BIN / "genai-ingest"), "stats", "--json", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)["chunk_ids_sha256"]


def phase_workers(sources: list[str], tmp: Path) -> dict[str, Any]:
    """One ``genai-ingest run`` process, then two started 2 s apart on a fresh data dir."""
    env = {**os.environ, "GENAI_INGEST_POLICIES__CLAIMS__POLL_S": "1"}
    start = time.perf_counter()
    one = _finish(_run(env, sources, tmp / "one"))
    one_s = time.perf_counter() - start
    start = time.perf_counter()
    first = _run(env, sources, tmp / "two")
    time.sleep(2)
    second = _run(env, sources, tmp / "two")
    two = [_finish(first), _finish(second)]
    two_s = time.perf_counter() - start
    return {
        "one": {"wall_s": one_s, "report": one, "digest": _digest(env, tmp / "one")},
        "two": {"wall_s": two_s, "reports": two, "digest": _digest(env, tmp / "two")},
    }


def print_costs(costs: dict[str, Any]) -> None:
    print(f"\nper-document costs (2 shared CPU cores; load average {os.getloadavg()[0]:.1f})")
    print(
        f"{'document':44} {'format':8} {'pages':>5} {'KB':>6} {'chunks':>6} {'parse s':>8}"
        f" {'chunk s':>8} {'dedup s':>8} {'CPU s':>7}"
    )
    by_format: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for r in costs["docs"]:
        print(
            f"{r['name'][:44]:44} {r['format'][:8]:8} {r['pages'] or '':>5} {r['kb']:6.0f}"
            f" {r['chunks']:6d} {r['parse_s']:8.2f} {r['chunk_s']:8.3f} {r['dedup_s']:8.3f}"
            f" {r['cpu_s']:7.2f}"
        )
        agg = by_format[r["format"]]
        agg[0] += r["parse_s"]
        agg[1] += r["parse_cpu_s"]
        agg[2] += r["pages"] or 1
        agg[3] += 1
    print("\nparse cost by format (PDF: per page; others: per document)")
    for fmt, (wall, cpu, units, n) in sorted(by_format.items()):
        unit = "page" if fmt == "pdf" else "doc"
        print(
            f"  {fmt:8} wall {wall / units:7.3f} s/{unit}, CPU {cpu / units:7.3f} s/{unit}"
            f"  ({n:.0f} docs, {units:.0f} {unit}s)"
        )
    n = costs["chunks"]
    chunk_s = sum(r["chunk_s"] for r in costs["docs"])
    dedup_s = sum(r["dedup_s"] for r in costs["docs"])
    rest_cpu = sum(r["cpu_s"] - r["parse_cpu_s"] for r in costs["docs"])
    print(f"\nper chunk ({n} chunks):")
    print(
        f"  clean+chunk {1000 * chunk_s / n:.2f} ms, validate+minhash {1000 * dedup_s / n:.2f} ms"
    )
    print(f"  everything after parsing, CPU: {1000 * rest_cpu / n:.2f} ms")
    print(
        f"  embed (CPU, local model): wall {1000 * costs['embed_s'] / n:.2f} ms,"
        f" CPU {1000 * costs['embed_cpu_s'] / n:.2f} ms"
    )
    print(f"  SQLite upsert {1000 * costs['sqlite_s'] / n:.3f} ms")
    if "es_s" in costs:
        print(
            f"  Elasticsearch bulk upsert {1000 * costs['es_s'] / n:.3f} ms,"
            f" {costs['es_bytes'] / 1024:.1f} KiB on disk (force-merged, no replica)"
        )


def print_prefect(prefect: dict[str, Any]) -> None:
    b = prefect["batches"]
    print(
        f"\nPrefect API per batch ({b} batches, in-process flow, {prefect['wall_s']:.1f} s):"
        f" {prefect.get('http', 0) / b:.1f} HTTP requests, {prefect.get('events', 0) / b:.1f}"
        f" events (totals {prefect.get('http', 0)} / {prefect.get('events', 0)})"
    )


def print_workers(w: dict[str, Any]) -> None:
    one, two = w["one"], w["two"]
    computed = [r["embeddings_computed"] for r in two["reports"]]
    skipped = [r["documents_skipped_claimed"] for r in two["reports"]]
    print(
        "\n1 vs 2 workers (genai-ingest run processes, same corpus, fresh data dirs;"
        f" load average {os.getloadavg()[0]:.1f})"
    )
    print(f"{'':28} {'1 worker':>12} {'2 workers':>12}")
    print(f"{'wall s':28} {one['wall_s']:12.1f} {two['wall_s']:12.1f}")
    print(f"{'speed-up':28} {1.0:12.2f} {one['wall_s'] / two['wall_s']:12.2f}")
    print(
        f"{'embeddings computed':28} {one['report']['embeddings_computed']:12d}"
        f" {sum(computed):12d}  ({' + '.join(map(str, computed))})"
    )
    print(f"{'documents skipped (claimed)':28} {0:12d} {' + '.join(map(str, skipped)):>12}")
    same = "yes" if one["digest"] == two["digest"] else "NO"
    print(f"{'same chunk_ids_sha256':28} {'':12} {same:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", default=[str(GOOD / p) for p in SUBSET])
    parser.add_argument("--phases", default="costs,prefect,workers")
    args = parser.parse_args()
    phases = args.phases.split(",")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
        if "costs" in phases:
            print_costs(phase_costs(args.sources, Path(tmp) / "costs"))
        if "prefect" in phases:
            print_prefect(phase_prefect(args.sources, Path(tmp) / "prefect"))
        if "workers" in phases:
            print_workers(phase_workers(args.sources, Path(tmp)))


if __name__ == "__main__":
    main()
