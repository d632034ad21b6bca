"""Per batch, in source order: ``deduplicate`` (sequential, so decisions are reproducible)
then ``embed_batch`` (cache first). A batch-level failure is charged to each of its documents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genai_ingest.config import DedupSettings
from genai_ingest.dedup import Candidate, find_duplicate, signature_from_bytes
from genai_ingest.dlq import Failure
from genai_ingest.embed import check_vectors
from genai_ingest.encoders import EmbedUnit, embed_units
from genai_ingest.errors import ErrorKind, IngestError, Stage
from genai_ingest.models import Chunk, EmbeddedChunk
from genai_ingest.prepare import Failed, Prepared, classify_keeping_trace
from genai_ingest.resilience import call_with_retry, embed_adaptive
from genai_ingest.runtime import Runtime
from genai_ingest.summary import RunSummary

# --- dedup (sequential, in source order, so decisions are reproducible) ----------------------


class DedupScope:
    """Dedup candidates: what the store holds plus what this batch accepted before."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.pending_docs: list[Prepared] = []
        self.pending_chunks: list[Chunk] = []

    def document_candidates(self, doc: Prepared) -> list[Candidate]:
        s = self.rt.settings.dedup
        keys = self.rt.hasher.band_keys(doc.signature, s.document_threshold)
        stored = self.rt.store.find_documents(text_hash=doc.text_hash, band_keys=keys)
        candidates = [
            Candidate(r.doc_id, r.text_hash or "", signature_from_bytes(r.signature))
            for r in stored
            if r.doc_id != doc.doc_id and r.signature is not None
        ]
        candidates += [
            Candidate(p.doc_id, p.text_hash, p.signature)
            for p in self.pending_docs
            if p.doc_id != doc.doc_id
        ]
        return candidates

    def chunk_candidates(self, chunk: Chunk, earlier: list[Chunk]) -> list[Candidate]:
        stored = self.rt.store.find_chunks(text_hashes=[chunk.text_hash], band_keys=chunk.band_keys)
        return [
            Candidate(f"{c.doc_id}:{c.chunk_id}", c.text_hash, signature_from_bytes(c.signature))
            for c in stored
            if c.doc_id != chunk.doc_id and c.signature is not None
        ] + [
            Candidate(f"{c.doc_id}:{c.chunk_id}", c.text_hash, signature_from_bytes(c.signature))
            for c in (*self.pending_chunks, *earlier)
            if c.signature is not None
            and (c.text_hash == chunk.text_hash or set(c.band_keys) & set(chunk.band_keys))
        ]


def deduplicate(
    docs: Sequence[Prepared], rt: Runtime, summary: RunSummary
) -> tuple[list[Prepared], list[Failed]]:
    """Mark duplicate documents and drop duplicate chunks, recording ``duplicate_of``.

    Returns the documents to embed and those whose candidate lookups failed (the store was
    unreachable past the ``store_write`` policy): they fail as transient, not the run."""
    s = rt.settings.dedup
    if not s.enabled:
        return list(docs), []
    scope = DedupScope(rt)
    kept_docs: list[Prepared] = []
    failed: list[Failed] = []
    with summary.timed(Stage.DEDUP):
        for doc in docs:
            try:
                call_with_retry(
                    lambda doc=doc: _deduplicate_one(doc, scope, s),
                    rt.settings.policies.store_write,
                    rt.store_breaker,
                    stats=rt.retry_stats,
                )
            except IngestError as error:
                failed += failure_for_batch([doc], error, Stage.DEDUP)
                continue
            kept_docs.append(doc)
    return kept_docs, failed


def _deduplicate_one(doc: Prepared, scope: DedupScope, s: DedupSettings) -> None:
    if doc.previous and doc.previous.metadata.get("dedup_exempt"):
        scope.pending_docs.append(doc)
        scope.pending_chunks += doc.chunks
        return
    decision = find_duplicate(
        doc.text_hash, doc.signature, scope.document_candidates(doc), s.document_threshold
    )
    if decision is not None:
        doc.duplicate_of = decision.duplicate_of
        doc.duplicate_similarity = decision.similarity
        return
    kept: list[Chunk] = []
    duplicates: dict[str, str] = {}
    for chunk in doc.chunks:
        signature = signature_from_bytes(chunk.signature or b"")
        chunk_decision = find_duplicate(
            chunk.text_hash,
            signature,
            scope.chunk_candidates(chunk, kept),
            s.chunk_threshold,
        )
        if chunk_decision is None:
            kept.append(chunk)
        else:
            duplicates[chunk.chunk_id] = chunk_decision.duplicate_of
    for chunk in doc.chunks:  # applied once every lookup succeeded: a retry starts clean
        chunk.duplicate_of = duplicates.get(chunk.chunk_id)
    doc.duplicate_chunks.update(duplicates)
    doc.chunks = kept
    scope.pending_docs.append(doc)
    scope.pending_chunks += kept


# --- embed ---------------------------------------------------------------------------------


@dataclass
class Embedded:
    """Documents of a batch with their vectors, and those that could not be embedded."""

    docs: list[Prepared]
    chunks: list[list[EmbeddedChunk]]  # per document, its chunks with their vectors
    failed: list[Failed]


def texts_to_embed(docs: Sequence[Prepared]) -> dict[str, str]:
    """Cache key -> text of every vector the kept chunks of ``docs`` need, windows encoded
    separately (the GPU fan-out, ``flows/fanout.py``)."""
    return {
        key: text
        for doc in docs
        if not doc.duplicate_of
        for chunk in doc.chunks
        for key, text in chunk.embedding_inputs()
    }


def units_to_embed(docs: Sequence[Prepared], pooled: bool) -> dict[str, tuple[Chunk, list[str]]]:
    """Chunk embed hash -> (chunk, cache keys of its vectors) of every kept chunk of ``docs``."""
    return {
        chunk.embed_hash: (chunk, chunk.vector_keys(pooled))
        for doc in docs
        if not doc.duplicate_of
        for chunk in doc.chunks
    }


def embed_batch(docs: Sequence[Prepared], rt: Runtime, summary: RunSummary) -> Embedded:
    """Embed every kept chunk of the batch in one batched pass, cache first: a chunk and its
    windows together (``encoders.embed_units``: windows pooled from the chunk's pass, or
    encoded separately, as the encoder says).

    A batch too large for the device or endpoint is split (``embed_adaptive``); an item that
    still fails sends its document to the DLQ. A transient failure is raised (after caching the
    vectors that did work) so the task is retried."""
    model_id, pooled = rt.model_id, rt.encoder.late_windows
    wanted = units_to_embed(docs, pooled)
    cached = rt.cache.get_many(model_id, [k for _, keys in wanted.values() for k in keys])
    misses = [u for u, (_, keys) in wanted.items() if not all(k in cached for k in keys)]
    errors: dict[str, IngestError] = {}
    if misses:
        units = [EmbedUnit(c.embed_text, tuple(c.window_texts)) for c, _ in map(wanted.get, misses)]
        with summary.timed(Stage.EMBED):
            result = embed_adaptive(lambda part: embed_units(rt.embedder, part, pooled), units)
        fresh = {}
        for i, rows in result.vectors.items():
            keys = wanted[misses[i]][1]
            try:
                checked = check_vectors(rows, len(keys), rt.embedder.dimension)
                fresh.update(zip(keys, checked, strict=True))
            except IngestError as exc:
                errors.update(dict.fromkeys(keys, exc))
        call_with_retry(
            lambda: rt.cache.put_many(model_id, fresh),
            rt.settings.policies.store_write,
            rt.store_breaker,
            stats=rt.retry_stats,
        )
        summary.add("embeddings_computed", len(fresh))
        for i, error in result.errors.items():
            errors.update(dict.fromkeys(wanted[misses[i]][1], error))
        transient = [e for e in errors.values() if e.kind is ErrorKind.TRANSIENT]
        if transient:
            raise transient[0]
    return from_cache(docs, rt, errors)


def from_cache(
    docs: Sequence[Prepared],
    rt: Runtime,
    errors: dict[str, IngestError],
    missing: BaseException | None = None,
) -> Embedded:
    """Assemble each document's chunk vectors from the cache; a document with a failed or
    missing vector fails (with that vector's error, else ``missing``)."""
    pooled = rt.encoder.late_windows
    wanted = units_to_embed(docs, pooled)
    cached = rt.cache.get_many(rt.model_id, [k for _, keys in wanted.values() for k in keys])
    out = Embedded([], [], [])
    for doc in docs:
        keys = (
            [k for c in doc.chunks for k in c.vector_keys(pooled)] if not doc.duplicate_of else []
        )
        error = next((errors[k] for k in keys if k in errors), None)
        if error is None and all(k in cached for k in keys):
            out.docs.append(doc)
            out.chunks.append(
                [] if doc.duplicate_of else [_embedded(c, cached, pooled) for c in doc.chunks]
            )
            continue
        out.failed += failure_for_batch(
            [doc], error or missing or RuntimeError("no vector"), Stage.EMBED
        )
    return out


def _embedded(chunk: Chunk, cached: dict[str, np.ndarray], pooled: bool) -> EmbeddedChunk:
    windows = [cached[key] for key in chunk.window_hashes(pooled)]
    return EmbeddedChunk(chunk, cached[chunk.embed_hash], np.stack(windows) if windows else None)


def failure_for_batch(
    docs: Sequence[Prepared], error: BaseException, stage_name: Stage
) -> list[Failed]:
    """A batch-level failure (embedding or store) charged to each of its documents."""
    classified = classify_keeping_trace(error, stage_name)
    return [
        Failed(
            Failure.from_error(
                classified,
                doc_id=doc.doc_id,
                source=doc.raw.ref.uri,
                version=doc.raw.version,
                parsers_tried=doc.parsers_tried,
            ),
            doc.raw.data,
        )
        for doc in docs
    ]
