"""``genai-ingest reindex``: a new model, encoder or schema without downtime.

The next generation of the index (``stores.generations``) is built **from the chunks already
stored**: the live generation's chunks are read page by page, re-embedded with the configured
encoder (the embedding cache first) and written by chunk id, then the ledger rows are copied;
no source is parsed. Every write is an upsert keyed by chunk or document id, so a build killed
at any point is resumed by running it again (the vectors computed before the kill come from the
cache), and a rerun also carries over what a run wrote to the live generation meanwhile and
deletes from the new one what the live one no longer has. Searches keep reading the live
generation throughout.

A ledger row keeps the fingerprint that makes the next ``run`` skip its unchanged document
only when the stored chunks are what this configuration would make of it (same pipeline, same
chunk settings, same model tokenizer); otherwise the row keeps its old fingerprint and the next
``run`` parses that document again (``documents_stale``).

``swap`` builds (or finishes) the generation, evaluates both generations on a QA file
(``genai_ingest.evaluate``) and makes the new one live only if its passage@k reaches the
threshold. ``rollback`` makes the previous generation live again; ``drop_previous`` deletes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from genai_ingest import progress
from genai_ingest.config import SearchMode, Settings
from genai_ingest.embed import Embedder, check_vectors
from genai_ingest.encoders import EmbedUnit, EncoderSpec, embed_units
from genai_ingest.evaluate import EvalReport, Retrieved, evaluate, load_qa
from genai_ingest.models import Chunk, EmbeddedChunk
from genai_ingest.resilience import call_with_retry, embed_adaptive
from genai_ingest.runtime import Runtime, fingerprint_of, shared_embedder
from genai_ingest.stores import open_store


@dataclass
class ReindexReport:
    """What a reindex command did (``--json`` prints it)."""

    generation: str | None  # the generation built, swapped in or rolled back to
    live: str | None  # the live generation when the command finished
    model_id: str | None = None
    dimension: int | None = None
    previous: str | None = None  # the generation that stopped being live (swap, rollback)
    documents_parsed: int = 0  # always 0: chunks come from the store, not from the sources
    documents_copied: int = 0
    documents_stale: int = 0  # ledger rows the next run parses again
    chunks_read: int = 0
    chunks_embedded: int = 0  # chunks whose vectors were computed (not from the cache)
    chunks_pruned: int = 0  # chunks of the new generation the live one no longer has
    swapped: bool = False
    rolled_back: bool = False
    dropped: list[str] = field(default_factory=list)
    gate: dict[str, Any] | None = None
    refused: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GateRefused(Exception):
    """The new generation's retrieval quality is below the threshold: the alias stays."""

    def __init__(self, report: ReindexReport) -> None:
        super().__init__(report.refused)
        self.report = report


def with_model(settings: Settings, model: str | None) -> Settings:
    """``settings`` embedding with ``model`` (unchanged without one)."""
    if not model:
        return settings
    return settings.model_copy(
        update={"embed": settings.embed.model_copy(update={"model": model})}, deep=True
    )


def encoder_settings(settings: Settings, encoder_id: str) -> Settings:
    """``settings`` configured for the encoder an index records (to query that index)."""
    spec = EncoderSpec.parse(encoder_id)
    embed = {"model": spec.model, "precision": "int8" if spec.int8 else "fp32"}
    embed |= {"window_pooling": spec.windows} if spec.windows != "separate" else {}
    embed |= {"backend": "onnx"} if spec.int8 else {}
    configured = settings.model_copy(
        update={"embed": settings.embed.model_copy(update=embed)}, deep=True
    )
    if EncoderSpec.of(configured).id != encoder_id:
        raise ValueError(f"cannot configure encoder {encoder_id} from these settings")
    return configured


def pages(items: Iterable[Chunk], size: int) -> Iterator[list[Chunk]]:
    iterator = iter(items)
    while page := list(islice(iterator, size)):
        yield page


def build_next(settings: Settings, model: str | None = None) -> ReindexReport:
    """Build (or resume) the next generation for ``settings`` (with ``model``) from the live
    generation's stored chunks and ledger; the alias stays where it is."""
    target = with_model(settings, model)
    if target.chunk.heading_context:
        raise ValueError(
            "reindex re-embeds stored chunk texts; with chunk.heading_context the embedded "
            "text also holds the document title, which is not stored: ingest again instead"
        )
    live, building = open_store(target), open_store(target)
    try:
        return _build(target, live, building)
    finally:
        live.close()
        building.close()


def _build(target: Settings, live: Any, building: Any) -> ReindexReport:
    """``build_next`` from the stores of the live and of the next generation."""
    identity = live.index_identity()
    if identity is None:
        raise ValueError("nothing to reindex: the index holds no generation yet")
    rt = Runtime(target)
    embedder = shared_embedder(target, None, rt.retry_stats)
    generation = building.begin_reindex(embedder.model_id, embedder.dimension)
    report = ReindexReport(generation, live.live_index(), embedder.model_id, embedder.dimension)
    progress.report("total", live.stats().chunks)
    same_tokenizer = EncoderSpec.parse(identity[0]).model == EncoderSpec.parse(rt.model_id).model
    seen: set[str] = set()
    for page in pages(live.iter_stored_chunks(), target.reindex_page_chunks):
        for chunk in page:
            chunk.window_texts = rt.chunker.windows_of(chunk.text)
            if not same_tokenizer:
                chunk.token_count = rt.chunker.count_tokens(chunk.embed_text)
        embedded, computed = embed_chunks(page, rt, embedder)
        call_with_retry(
            lambda rows=embedded: building.upsert_chunks(rows),
            target.policies.store_write,
            rt.store_breaker,
            stats=rt.retry_stats,
        )
        seen.update(c.chunk_id for c in page)
        report.chunks_read += len(page)
        report.chunks_embedded += computed
        progress.report("chunks", len(page))
    stale_ids = [c.chunk_id for c in building.iter_stored_chunks() if c.chunk_id not in seen]
    report.chunks_pruned = building.delete_chunks(stale_ids)
    renewable = fingerprints(target, identity[0], rt.model_id) if same_tokenizer else None
    _copy_ledger(live, building, report, renewable)
    return report


def fingerprints(settings: Settings, live_model: str, new_model: str) -> tuple[str, str]:
    """(fingerprint a ledger row has when its chunks are what ``settings`` make, the one it
    gets in the new generation)."""
    return fingerprint_of(settings, live_model), fingerprint_of(settings, new_model)


def _copy_ledger(
    live: Any, building: Any, report: ReindexReport, prints: tuple[str, str] | None
) -> None:
    """Copy the ledger rows, renewing the fingerprints ``prints`` allows (None: none)."""
    current, renewed = prints or (None, None)
    kept: set[str] = set()
    for record in live.iter_documents():
        if current is not None and record.metadata.get("fingerprint") == current:
            record.metadata = {**record.metadata, "fingerprint": renewed}
        else:
            report.documents_stale += 1
        building.put_document(record)
        kept.add(record.doc_id)
        report.documents_copied += 1
    for record in list(building.iter_documents()):
        if record.doc_id not in kept:
            building.delete_document(record.doc_id)


def embed_chunks(
    chunks: Sequence[Chunk], rt: Runtime, embedder: Embedder
) -> tuple[list[EmbeddedChunk], int]:
    """The chunks with their vectors (cache first, then one batched pass) and how many
    chunks needed computing; a chunk that cannot be embedded raises its classified error."""
    pooled, model_id = rt.encoder.late_windows, embedder.model_id
    keys = {c.chunk_id: c.vector_keys(pooled) for c in chunks}
    vectors = rt.cache.get_many(model_id, [k for ks in keys.values() for k in ks])
    missing = [c for c in chunks if not all(k in vectors for k in keys[c.chunk_id])]
    if missing:
        units = [EmbedUnit(c.embed_text, tuple(c.window_texts)) for c in missing]
        result = embed_adaptive(lambda part: embed_units(embedder, part, rt.encoder.windows), units)
        if result.errors:
            raise next(iter(result.errors.values()))
        fresh: dict[str, np.ndarray] = {}
        for i, rows in result.vectors.items():
            wanted = keys[missing[i].chunk_id]
            checked = check_vectors(rows, len(wanted), embedder.dimension)
            fresh.update(zip(wanted, checked, strict=True))
        rt.cache.put_many(model_id, fresh)
        vectors |= fresh
    embedded = []
    for chunk in chunks:
        windows = [vectors[k] for k in chunk.window_hashes(pooled)]
        embedded.append(
            EmbeddedChunk(chunk, vectors[chunk.embed_hash], np.stack(windows) if windows else None)
        )
    return embedded, len(missing)


# --- the gate, the swap, rollback and drop ----------------------------------------------------


def evaluate_generation(settings: Settings, store: Any, qa_file: Path, k: int) -> EvalReport:
    """``eval`` of ``qa_file`` on the generation ``store`` reads, its queries embedded by the
    encoder ``settings`` configure (the one that generation records)."""
    mode = settings.search.mode
    embed: Callable[[list[str]], Any] = lambda qs: [None] * len(qs)  # noqa: E731
    if mode is not SearchMode.LEXICAL:
        embed = Runtime(settings).query_embedder.embed

    def search(questions: list[str], top: int) -> list[list[Retrieved]]:
        results = [
            store.search(v, k=top, text=q, mode=mode, fusion=settings.search.fusion)
            for q, v in zip(questions, embed(questions), strict=True)
        ]
        return [[Retrieved(h.source, h.text) for h in hits] for hits in results]

    return evaluate(load_qa(qa_file), search, k)


def swap(
    settings: Settings,
    qa_file: Path,
    min_passage_at_k: float,
    model: str | None = None,
    k: int = 5,
) -> ReindexReport:
    """Finish the build, evaluate both generations on ``qa_file`` and make the new one live
    if its passage@k is at least ``min_passage_at_k``; else raise ``GateRefused``."""
    report = build_next(settings, model)
    target = with_model(settings, model)
    live, building = open_store(target), open_store(target)
    identity = live.index_identity()
    building.begin_reindex(report.model_id or "", report.dimension or 0)
    before = evaluate_generation(encoder_settings(target, identity[0]), live, qa_file, k)
    after = evaluate_generation(target, building, qa_file, k)
    report.gate = {
        "k": k,
        "min_passage_at_k": min_passage_at_k,
        "live": {"generation": report.live, **_figures(before)},
        "new": {"generation": report.generation, **_figures(after)},
    }
    try:
        if after.passage_at_k < min_passage_at_k:
            report.refused = (
                f"passage@{k} of {report.generation} is {after.passage_at_k:.3f}, below "
                f"--min-passage-at-k {min_passage_at_k} (live {report.live}: "
                f"{before.passage_at_k:.3f}): the alias stays on {report.live}"
            )
            raise GateRefused(report)
        building.swap_alias()
        report.swapped, report.previous, report.live = True, report.live, building.live_index()
    finally:
        live.close()
        building.close()
    return report


def _figures(report: EvalReport) -> dict[str, Any]:
    return {
        "questions": report.questions,
        "doc_at_k": round(report.doc_at_k, 4),
        "passage_at_k": round(report.passage_at_k, 4),
        "mrr": round(report.mrr, 4),
    }


def rollback(settings: Settings) -> ReindexReport:
    """Make the previous generation live again (the one rolled back from is kept)."""
    store = open_store(settings)
    try:
        rolled_from = store.live_index()
        generation = store.rollback()
        identity = store.index_identity()
    finally:
        store.close()
    return ReindexReport(
        generation,
        generation,
        identity[0] if identity else None,
        identity[1] if identity else None,
        previous=rolled_from,
        rolled_back=True,
    )


def drop_previous(settings: Settings) -> ReindexReport:
    """Delete the generations older than the live one."""
    store = open_store(settings)
    try:
        dropped = store.drop_previous()
        live = store.live_index()
        identity = store.index_identity()
    finally:
        store.close()
    model_id, dimension = identity if identity else (None, None)
    return ReindexReport(live, live, model_id, dimension, dropped=dropped)
