"""Build (or resume) the next generation from the stored chunks.

The live generation's chunks are read page by page, re-embedded with the configured encoder
(the embedding cache first) and written by chunk id, then the ledger rows are copied; no source
is parsed. Every write is an upsert keyed by chunk or document id, so a build killed at any
point is resumed by running it again (the vectors computed before the kill come from the
cache), and a rerun also carries over what a run wrote to the live generation meanwhile and
deletes from the new one what the live one no longer has. Searches keep reading the live
generation throughout.

A ledger row keeps the fingerprint that makes the next ``run`` skip its unchanged document
only when the stored chunks are what this configuration would make of it (same pipeline, same
chunk settings, same model tokenizer); otherwise the row keeps its old fingerprint and the next
``run`` parses that document again (``documents_stale``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import numpy as np

from genai_ingest.config import Settings
from genai_ingest.embed.encoders import EmbedUnit, EncoderSpec, embed_units
from genai_ingest.embed.local import Embedder, check_vectors
from genai_ingest.failures.resilience import call_with_retry, embed_adaptive
from genai_ingest.models import Chunk, EmbeddedChunk
from genai_ingest.reindex.report import ReindexReport
from genai_ingest.run import progress
from genai_ingest.run.runtime import Runtime, fingerprint_of, shared_embedder
from genai_ingest.stores import open_store


def with_model(settings: Settings, model: str | None) -> Settings:
    """``settings`` embedding with ``model`` (unchanged without one)."""
    if not model:
        return settings
    return settings.model_copy(
        update={"embed": settings.embed.model_copy(update={"model": model})}, deep=True
    )


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
