"""Per document, after embedding: ``commit`` (chunks upserted by id, stale ids deleted, the
ledger row written last), failures to the DLQ, and removals of documents gone from the sources.

Idempotency: chunk ids are deterministic, so after a crash anywhere the next run sees the old
ledger version, redoes the document (cheaply: its vectors are in the embedding cache), and
converges."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from genai_ingest.failures.dlq import EntryStatus, Failure
from genai_ingest.failures.errors import IngestError, Stage, StoreUnavailable
from genai_ingest.failures.redact import keepable_bytes
from genai_ingest.failures.resilience import call_with_retry
from genai_ingest.models import DocStatus, DocumentRecord, EmbeddedChunk, utcnow
from genai_ingest.run.batch import stored_copies
from genai_ingest.run.prepare import Failed, Prepared
from genai_ingest.run.runtime import Runtime
from genai_ingest.run.spool import FailureSpool
from genai_ingest.run.summary import RunSummary
from genai_ingest.text.dedup import canonical_rank, signature_to_bytes

logger = logging.getLogger(__name__)


def commit(
    doc: Prepared, chunks: Sequence[EmbeddedChunk], rt: Runtime, summary: RunSummary
) -> set[str]:
    """Upsert the document's chunks, delete its stale ones, write its ledger row last.
    Safe to repeat, so a store outage is retried with backoff (``policies.store_write``).

    Returns the documents to redo so that the copy ranked first is the one kept: those this
    one outranks (marked ``displaced_by`` before its ledger row is written, so a crash cannot
    lose the re-point) and those ``recheck_copies`` finds after it."""
    with summary.timed(Stage.STORE):
        written, deleted = call_with_retry(
            lambda: _commit_once(doc, chunks, rt),
            rt.settings.policies.store_write,
            rt.store_breaker,
            stats=rt.retry_stats,
        )
        try:
            redo = call_with_retry(
                lambda: recheck_copies(doc, rt),
                rt.settings.policies.store_write,
                rt.store_breaker,
                stats=rt.retry_stats,
            )
        except IngestError as error:  # committed all the same; a concurrent copy may stay
            logger.warning("%s: copies not rechecked: %s", doc.doc_id, error.reason)
            redo = set()
    summary.add("chunks_written", written)
    summary.add("chunks_deleted", deleted)
    summary.add("chunks_duplicate", len(doc.duplicate_chunks))
    summary.add("documents_duplicate" if doc.duplicate_of else "documents_indexed")
    rt.claims.release([doc.doc_id])
    return redo | doc.displaces


def _commit_once(doc: Prepared, chunks: Sequence[EmbeddedChunk], rt: Runtime) -> tuple[int, int]:
    store = rt.store
    new_ids = [] if doc.duplicate_of else [c.chunk_id for c in doc.chunks]
    written = store.upsert_chunks(list(chunks)) if new_ids else 0
    old_ids = set(doc.previous.chunk_ids) if doc.previous else set()
    stale = (old_ids | store.chunk_ids_of(doc.doc_id)) - set(new_ids)
    deleted = store.delete_chunks(sorted(stale)) if stale else 0
    mark_displaced(doc.displaces, doc.doc_id, rt)
    store.put_document(_ledger_row(doc, new_ids, rt))
    return written, deleted


def mark_displaced(doc_ids: set[str], by: str, rt: Runtime) -> None:
    """Note on the ledger rows of ``doc_ids`` that ``by`` is a copy ranked before them: they
    are no longer unchanged, so whichever run sees them next redoes them."""
    for doc_id in sorted(doc_ids):
        record = rt.store.get_document(doc_id)
        if record is not None and record.metadata.get("displaced_by") != by:
            record.metadata = {**record.metadata, "displaced_by": by}
            rt.store.put_document(record)


def recheck_copies(doc: Prepared, rt: Runtime) -> set[str]:
    """After the ledger write: copies of the document (or of its kept chunks) stored by a
    concurrent run since this one was deduplicated. Of each such pair, the one ranked after
    the other is marked displaced and returned (the later of two racing commits sees the
    earlier one, so every pair is caught)."""
    rank = canonical_rank(doc.raw.ref.uri, doc.doc_id)
    copies = stored_copies(doc, rt)
    after = {c.doc_id for c in copies if c.rank > rank}
    before = sorted(c.rank for c in copies if c.rank < rank)
    mark_displaced(after, doc.doc_id, rt)
    if before:
        mark_displaced({doc.doc_id}, before[0][1], rt)
        return after | {doc.doc_id}
    return after


def _ledger_row(doc: Prepared, chunk_ids: list[str], rt: Runtime) -> DocumentRecord:
    previous = doc.previous
    keys = rt.hasher.band_keys(doc.signature, rt.settings.dedup.document_threshold)
    return DocumentRecord(
        doc_id=doc.doc_id,
        source=doc.raw.ref.uri,
        version=doc.raw.version,
        status=DocStatus.DUPLICATE if doc.duplicate_of else DocStatus.INDEXED,
        chunk_ids=chunk_ids,
        parser=doc.parser,
        language=doc.language,
        text_hash=doc.text_hash,
        duplicate_of=doc.duplicate_of,
        signature=signature_to_bytes(doc.signature),
        band_keys=[] if doc.duplicate_of else keys,
        created_at=previous.created_at if previous else utcnow(),
        metadata={
            "fingerprint": rt.fingerprint,
            "name": doc.raw.ref.name,
            "format": doc.format,
            "parsers_tried": doc.parsers_tried,
            "size": len(doc.raw.data),
            "duplicate_similarity": doc.duplicate_similarity,
            "duplicate_chunks": doc.duplicate_chunks,
            "depends_on": doc.depends_on,
            "dedup_exempt": bool(previous and previous.metadata.get("dedup_exempt")),
            "pages_without_ocr": doc.pages_without_ocr,
            "indexed_at": utcnow().isoformat(),
        },
    )


def resolve_dead_letters(docs: Sequence[Prepared], rt: Runtime) -> None:
    """Resolve the open DLQ entries of documents that are now committed (history kept)."""
    for doc in docs:
        entry = rt.dlq.get(doc.doc_id)
        if entry is not None and entry.status is EntryStatus.OPEN:
            state = "duplicate" if doc.duplicate_of else "indexed"
            rt.dlq.resolve(doc.doc_id, f"{state}: version {doc.raw.version[:12]} ({doc.parser})")


# --- failures --------------------------------------------------------------------------------


def record_failure(failed: Failed, rt: Runtime, summary: RunSummary) -> None:
    """Send a failure to the DLQ (or, if the DLQ's store is down, to the local spool) and note
    it on the ledger. A document indexed before keeps its last good chunks; a permanent
    failure of the same bytes is not retried by later runs. Text that shows a secret (or is
    too large to scan) is not kept: the entry points at its source (``keepable_bytes``)."""
    failure = failed.failure
    summary.failed(failure)
    raw = None if failed.raw is None else keepable_bytes(failed.raw)
    try:
        rt.dlq.put(failure, raw)
        _note_failure_on_ledger(failure, rt)
    except StoreUnavailable:
        FailureSpool(rt.settings.data_dir).put(failure, raw)
    rt.claims.release([failure.doc_id])


def _note_failure_on_ledger(failure: Failure, rt: Runtime) -> None:
    previous = rt.store.get_document(failure.doc_id)
    if previous is not None and previous.status is not DocStatus.FAILED:
        previous.error_class, previous.error_kind = failure.error_class, failure.error_kind
        previous.metadata = {**previous.metadata, "failed_version": failure.version}
        previous.updated_at = utcnow()
        rt.store.put_document(previous)
        return
    rt.store.put_document(
        DocumentRecord(
            doc_id=failure.doc_id,
            source=failure.source,
            version=failure.version or "",
            status=DocStatus.FAILED,
            error_class=failure.error_class,
            error_kind=failure.error_kind,
            created_at=previous.created_at if previous else utcnow(),
            metadata={"fingerprint": rt.fingerprint, "parsers_tried": failure.parsers_tried},
        )
    )


def delete_document(doc_id: str, rt: Runtime, summary: RunSummary) -> None:
    """Remove a document's chunks, then its ledger row."""
    record = rt.store.get_document(doc_id)
    ids = set(record.chunk_ids if record else []) | rt.store.chunk_ids_of(doc_id)
    summary.add("chunks_deleted", rt.store.delete_chunks(sorted(ids)))
    rt.store.delete_document(doc_id)
    summary.add("documents_deleted")


def missing_documents(roots: Sequence[str], seen_uris: set[str], rt: Runtime) -> list[str]:
    """Ledger documents under ``roots`` that the sources no longer list."""
    return [
        r.doc_id
        for r in rt.store.iter_documents()
        if r.source not in seen_uris and any(r.source.startswith(root) for root in roots)
    ]


def dependents_of(doc_ids: set[str], rt: Runtime) -> list[DocumentRecord]:
    """Documents whose duplicate decisions point into ``doc_ids`` (redo them when those
    change, so no chunk is lost behind a ``duplicate_of`` that no longer exists)."""
    if not doc_ids:
        return []
    return [
        r
        for r in rt.store.iter_documents()
        if r.doc_id not in doc_ids and doc_ids & set(r.metadata.get("depends_on", []))
    ]
