"""Per batch: ``deduplicate`` (sequential, in canonical order, so decisions do not depend on
arrival order) then ``embed_batch`` (cache first). A batch-level failure is charged to each of
its documents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genai_ingest.config import DedupSettings
from genai_ingest.embed.encoders import EmbedUnit, embed_units
from genai_ingest.embed.local import check_vectors
from genai_ingest.failures.dlq import Failure
from genai_ingest.failures.errors import ErrorKind, IngestError, Stage
from genai_ingest.failures.resilience import call_with_retry, embed_adaptive
from genai_ingest.models import Chunk, EmbeddedChunk
from genai_ingest.run.prepare import Failed, Prepared, classify_keeping_trace
from genai_ingest.run.runtime import Runtime
from genai_ingest.run.summary import RunSummary
from genai_ingest.text.dedup import (
    Candidate,
    canonical_rank,
    find_duplicate,
    matching,
    signature_from_bytes,
)

# --- dedup (in canonical order, so decisions do not depend on arrival order) ------------------


def rank_of(doc: Prepared) -> tuple[str, str]:
    return canonical_rank(doc.raw.ref.uri, doc.doc_id)


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
            Candidate(
                r.doc_id, r.text_hash or "", signature_from_bytes(r.signature), r.doc_id, r.source
            )
            for r in stored
            if r.doc_id != doc.doc_id and r.signature is not None
        ]
        candidates += [
            Candidate(p.doc_id, p.text_hash, p.signature, p.doc_id, p.raw.ref.uri)
            for p in self.pending_docs
            if p.doc_id != doc.doc_id
        ]
        return candidates

    def chunk_candidates(self, chunk: Chunk, earlier: list[Chunk]) -> list[Candidate]:
        stored = self.rt.store.find_chunks(text_hashes=[chunk.text_hash], band_keys=chunk.band_keys)
        return [
            chunk_candidate(c.chunk_id, c.doc_id, c.source, c.text_hash, c.signature)
            for c in stored
            if c.doc_id != chunk.doc_id and c.signature is not None
        ] + [
            chunk_candidate(
                c.chunk_id, c.doc_id, c.metadata.get("source", ""), c.text_hash, c.signature
            )
            for c in (*self.pending_chunks, *earlier)
            if c.signature is not None
            and (c.text_hash == chunk.text_hash or set(c.band_keys) & set(chunk.band_keys))
        ]


def chunk_candidate(
    chunk_id: str, doc_id: str, source: str, text_hash: str, signature: bytes | None
) -> Candidate:
    return Candidate(
        f"{doc_id}:{chunk_id}", text_hash, signature_from_bytes(signature or b""), doc_id, source
    )


def ranked(candidates: list[Candidate], doc: Prepared) -> tuple[list[Candidate], list[Candidate]]:
    """The candidates that rank before ``doc`` (its own earlier chunks included), and after."""
    rank = rank_of(doc)
    before, after = [], []
    for c in candidates:
        (before if c.doc_id == doc.doc_id or c.rank < rank else after).append(c)
    return before, after


def deduplicate(
    docs: Sequence[Prepared], rt: Runtime, summary: RunSummary
) -> tuple[list[Prepared], list[Failed]]:
    """Mark duplicate documents and drop duplicate chunks, recording ``duplicate_of``.

    The copy kept is the one ranked first (``dedup.canonical_rank``), whichever arrived
    first: the batch is decided in rank order, and a stored document that this one outranks
    is listed in ``displaces`` (it is redone after the commit, and becomes the duplicate).

    Returns the documents to embed and those whose candidate lookups failed (the store was
    unreachable past the ``store_write`` policy): they fail as transient, not the run."""
    s = rt.settings.dedup
    if not s.enabled:
        return list(docs), []
    scope = DedupScope(rt)
    kept_docs: list[Prepared] = []
    failed: list[Failed] = []
    with summary.timed(Stage.DEDUP):
        for doc in sorted(docs, key=rank_of):
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
    before, after = ranked(scope.document_candidates(doc), doc)
    decision = find_duplicate(doc.text_hash, doc.signature, before, s.document_threshold)
    if decision is not None:
        doc.duplicate_of = decision.duplicate_of
        doc.duplicate_similarity = decision.similarity
        return
    displaced = {
        c.doc_id for c in matching(doc.text_hash, doc.signature, after, s.document_threshold)
    }
    kept: list[Chunk] = []
    duplicates: dict[str, str] = {}
    for chunk in doc.chunks:
        signature = signature_from_bytes(chunk.signature or b"")
        before, after = ranked(scope.chunk_candidates(chunk, kept), doc)
        chunk_decision = find_duplicate(chunk.text_hash, signature, before, s.chunk_threshold)
        if chunk_decision is None:
            kept.append(chunk)
            displaced |= {
                c.doc_id for c in matching(chunk.text_hash, signature, after, s.chunk_threshold)
            }
        else:
            duplicates[chunk.chunk_id] = chunk_decision.duplicate_of
    for chunk in doc.chunks:  # applied once every lookup succeeded: a retry starts clean
        chunk.duplicate_of = duplicates.get(chunk.chunk_id)
    doc.duplicate_chunks.update(duplicates)
    doc.chunks = kept
    doc.displaces = displaced
    scope.pending_docs.append(doc)
    scope.pending_chunks += kept


#: Chunks whose stored copies are looked up in one request by ``stored_copies``.
LOOKUP_CHUNKS = 200


def stored_copies(doc: Prepared, rt: Runtime) -> list[Candidate]:
    """Stored documents and chunks of other documents that ``doc`` or one of its kept chunks
    duplicates: after its commit, the copies a concurrent run committed meanwhile show up
    here (``commit.recheck_copies``)."""
    s, store = rt.settings.dedup, rt.store
    if (
        not s.enabled
        or doc.duplicate_of
        or (doc.previous and doc.previous.metadata.get("dedup_exempt"))
    ):
        return []
    keys = rt.hasher.band_keys(doc.signature, s.document_threshold)
    docs = [
        Candidate(
            r.doc_id, r.text_hash or "", signature_from_bytes(r.signature), r.doc_id, r.source
        )
        for r in store.find_documents(text_hash=doc.text_hash, band_keys=keys)
        if r.doc_id != doc.doc_id and r.signature is not None
    ]
    copies = matching(doc.text_hash, doc.signature, docs, s.document_threshold)
    for start in range(0, len(doc.chunks), LOOKUP_CHUNKS):
        group = doc.chunks[start : start + LOOKUP_CHUNKS]
        stored = store.find_chunks(
            text_hashes=[c.text_hash for c in group],
            band_keys=sorted({k for c in group for k in c.band_keys}),
        )
        candidates = [
            chunk_candidate(c.chunk_id, c.doc_id, c.source, c.text_hash, c.signature)
            for c in stored
            if c.doc_id != doc.doc_id and c.signature is not None
        ]
        bands = [set(rt.hasher.band_keys(c.signature, s.chunk_threshold)) for c in candidates]
        for chunk in group:  # the candidates ``chunk_candidates`` would find for it, no others
            found = [
                c
                for c, keys in zip(candidates, bands, strict=True)
                if c.text_hash == chunk.text_hash or keys & set(chunk.band_keys)
            ]
            signature = signature_from_bytes(chunk.signature or b"")
            copies += matching(chunk.text_hash, signature, found, s.chunk_threshold)
    return copies


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
    windows together (``encoders.embed_units``: windows pooled from the chunk's pass, windows
    only, or each encoded separately, as the encoder says).

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
            result = embed_adaptive(
                lambda part: embed_units(rt.embedder, part, rt.encoder.windows), units
            )
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
        summary.add("embeddings_computed", len(fresh.keys() - cached.keys()))
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
