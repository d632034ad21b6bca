"""The ingestion stages composed as plain functions, callable without Prefect.

Per document: ``prepare`` (fetch → skip if unchanged → parse → clean → validate → chunk),
then per batch, in source order: ``deduplicate`` → ``embed_batch`` → ``commit``. Any failure is
classified and becomes a ``Failure`` for the DLQ; the run goes on.

Idempotency: chunk ids are deterministic, chunks are upserted by id, stale ids are deleted,
and the ledger row is written last. After a crash anywhere, the next run sees the old ledger
version, redoes the document (cheaply: its vectors are in the embedding cache), and converges.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import SecretStr

from genai_ingest.claims import ClaimKeeper
from genai_ingest.clean import clean_text
from genai_ingest.config import DedupSettings, Settings, ValidationSettings
from genai_ingest.dedup import (
    Candidate,
    MinHasher,
    find_duplicate,
    normalized_text_hash,
    signature_from_bytes,
    signature_to_bytes,
)
from genai_ingest.dlq import DeadLetterQueue, EntryStatus, Failure
from genai_ingest.embed import Embedder, EmbeddingCache, check_vectors, resolve_model_path
from genai_ingest.errors import (
    ErrorKind,
    IngestError,
    Stage,
    StoreUnavailable,
    UnsafeContent,
    classify,
)
from genai_ingest.models import (
    Chunk,
    DocStatus,
    DocumentRecord,
    EmbeddedChunk,
    RawDocument,
    SourceRef,
    sha256_hex,
    utcnow,
)
from genai_ingest.redact import keepable_bytes, register_secret
from genai_ingest.resilience import (
    CircuitBreaker,
    RetryStats,
    breaker_for,
    call_with_retry,
    embed_adaptive,
)
from genai_ingest.sources import fetch
from genai_ingest.spool import FailureSpool
from genai_ingest.stores import open_claims, open_dlq, open_store
from genai_ingest.stores.base import VectorStore
from genai_ingest.validate import validate_text

if TYPE_CHECKING:  # llama-index: imported where used, an unchanged re-run needs none
    from genai_ingest.chunk import Chunker

#: Formats whose text keeps the line breaks of the page: reflowed into paragraphs when cleaned.
HARD_WRAPPED_FORMATS = frozenset({"pdf", "image"})
#: Bump when a change in this package changes the chunks produced for the same bytes.
PIPELINE_VERSION = "3"  # 2: secrets redacted in the normal form (Markdown escapes undone)
# 3: PDF text reflowed, chunks packed across small sections, embedded with their heading
#    context, page and heading citations


# --- runtime: the heavy objects, built once per process ------------------------------------


#: Parse settings that change how parsing runs, not what it produces.
_OPERATIONAL_PARSE_FIELDS = {
    "passwords",
    "ocr_timeout_s",
    "isolate",
    "workers",
    "timeout_s",
    "timeout_per_mb_s",
    "text_timeout_per_mb_s",
    "timeout_per_page_s",
    "max_timeout_s",
    "worker_memory_mb",
    "max_tasks_per_worker",
}


class Runtime:
    """Store, DLQ, embedder, cache, chunker and hasher for one configuration."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for secret in settings.parse.passwords.values():
            register_secret(secret.get_secret_value())
        self._local = threading.local()

    @cached_property
    def store(self) -> VectorStore:
        return open_store(self.settings)

    @cached_property
    def dlq(self) -> DeadLetterQueue:
        return open_dlq(self.settings)

    @cached_property
    def embedder(self) -> Embedder:
        """Built (a local model loaded) on first use only: a run with nothing to embed, or a
        re-run of unchanged documents, never loads it."""
        identity = self.store.index_identity()
        embedder = shared_embedder(self.settings, identity, self.retry_stats)
        if identity is not None:  # refuses a model of another dimension under the same id
            self.store.ensure_index(embedder.model_id, embedder.dimension)
        return embedder

    @cached_property
    def model_id(self) -> str:
        """The id vectors are recorded under, known without loading a local model."""
        remote = self.settings.remote_embed
        if remote.primary is None:
            return self.settings.embed.model  # what ``LocalEmbedder`` records
        if not remote.fallbacks:
            return remote.primary.model  # what ``RemoteEmbedder`` records
        return self.embedder.model_id  # the index's vector space; building it asks nothing

    @cached_property
    def retry_stats(self) -> RetryStats:
        """Retries and backoff time of every remote call made for this configuration."""
        return RetryStats()

    @cached_property
    def cache(self) -> EmbeddingCache:
        return EmbeddingCache(self.settings.database_path, self.settings.sqlite_busy_timeout_s)

    @property
    def chunker(self) -> Chunker:
        """One per thread: Hugging Face fast tokenizers are not safe to share across threads."""
        chunker = getattr(self._local, "chunker", None)
        if chunker is None:
            from genai_ingest.chunk import Chunker

            tokenizer, max_tokens = _tokenizer_for(self.embedder, self.settings)
            chunker = self._local.chunker = Chunker(tokenizer, self.settings.chunk, max_tokens)
        return chunker

    @cached_property
    def hasher(self) -> MinHasher:
        return MinHasher(self.settings.dedup)

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever the same bytes would give different chunks or vectors."""
        s = self.settings
        relevant = {
            "pipeline": PIPELINE_VERSION,
            "model": self.model_id,
            "parse": s.parse.model_dump(exclude=_OPERATIONAL_PARSE_FIELDS),
            "clean": s.clean.model_dump(),
            "validation": s.validation.model_dump(),
            "chunk": s.chunk.model_dump(),
            "dedup": s.dedup.model_dump(),
        }
        return sha256_hex(json.dumps(relevant, sort_keys=True, default=str))[:16]

    @cached_property
    def claims(self) -> ClaimKeeper:
        """This process's claims on documents (concurrent runs never work on one at once)."""
        return ClaimKeeper(open_claims(self.settings, self.store), self.settings.policies.claims)

    @cached_property
    def store_breaker(self) -> CircuitBreaker:
        return breaker_for(
            f"store:{self.settings.store_url or self.settings.database_path}",
            self.settings.policies.store_breaker,
        )

    def open(self) -> Runtime:
        """Check the index identity before any work (refuses another model's index). An index
        that records the configured model is accepted without loading the model."""
        identity = self.store.index_identity()
        if identity is None or identity[0] != self.model_id:
            self.store.ensure_index(self.embedder.model_id, self.embedder.dimension)
        return self

    def drain_spool(self) -> int:
        """Move failures spooled during a store outage into the DLQ (each run and replay)."""
        return FailureSpool(self.settings.data_dir).drain(self.dlq)


def _tokenizer_for(embedder: Embedder, settings: Settings) -> tuple[Any, int]:
    """A private copy of the tokenizer that measures chunks (the embedding model's own, or for a
    remote endpoint the one of ``embed.model``) and the model's token window."""
    from transformers import AutoTokenizer

    own = getattr(embedder, "tokenizer", None)
    tokenizer = (
        copy.deepcopy(own)
        if own is not None
        else AutoTokenizer.from_pretrained(resolve_model_path(settings.embed.model))
    )
    max_tokens = getattr(embedder, "max_tokens", None) or settings.embed.max_seq_tokens
    return tokenizer, int(max_tokens or getattr(tokenizer, "model_max_length", 256))


_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


def shared_embedder(
    settings: Settings, index_identity: tuple[str, int] | None, stats: RetryStats
) -> Embedder:
    """One embedder per model configuration per process (a model is loaded once)."""
    from genai_ingest.remote_embed import build_embedder

    key = sha256_hex(
        settings.embed.model_dump_json()
        + settings.remote_embed.model_dump_json()
        + json.dumps(index_identity)
    )
    with _embedders_lock:
        if key not in _embedders:
            _embedders[key] = build_embedder(settings, index_identity, stats)
        return _embedders[key]


# --- run summary -----------------------------------------------------------------------------

COUNTERS = (
    "documents_seen",
    "documents_indexed",
    "documents_unchanged",
    "documents_failed",
    "documents_duplicate",
    "documents_deleted",
    "chunks_written",
    "chunks_deleted",
    "chunks_duplicate",
    "embeddings_computed",
    "documents_skipped_claimed",
)


@dataclass
class RunSummary:
    """Counters and per-stage timings of one run; thread-safe."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    failures: list[dict[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self.counts[counter] += n

    @contextmanager
    def timed(self, stage: Stage | str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.stage_seconds[str(stage)] += time.perf_counter() - start

    def failed(self, failure: Failure) -> None:
        with self._lock:
            self.counts["documents_failed"] += 1
            self.failures.append(
                {
                    "doc_id": failure.doc_id,
                    "source": failure.source,
                    "stage": failure.stage,
                    "error_class": failure.error_class,
                    "error_kind": failure.error_kind,
                    "reason": failure.reason,
                }
            )

    def merge(self, report: dict[str, Any]) -> None:
        """Add another run's report (a shard's) to this one; ``documents_seen`` excepted."""
        with self._lock:
            for counter in COUNTERS[1:]:
                self.counts[counter] += report.get(counter, 0)
            for stage_name, seconds in report.get("stage_seconds", {}).items():
                self.stage_seconds[stage_name] += seconds
            self.failures += report.get("failures", [])

    def to_json(self) -> dict[str, Any]:
        return {
            **self.counts,
            "dlq_new": len(self.failures),
            "stage_seconds": {k: round(v, 3) for k, v in sorted(self.stage_seconds.items())},
            "failures": self.failures,
        }


# --- per-document preparation ----------------------------------------------------------------


@dataclass
class Overrides:
    """Fixes applied on DLQ replay (never persisted with secrets)."""

    password: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    skip_language_check: bool = False
    unsafe_content: str | None = None
    force: bool = False


@dataclass
class Prepared:
    """A document ready to be deduplicated, embedded and committed."""

    raw: RawDocument
    parser: str
    parsers_tried: list[str]
    format: str
    language: str | None
    text_hash: str
    signature: np.ndarray
    chunks: list[Chunk]
    previous: DocumentRecord | None
    duplicate_of: str | None = None
    duplicate_similarity: float | None = None
    duplicate_chunks: dict[str, str] = field(default_factory=dict)

    @property
    def doc_id(self) -> str:
        return self.raw.doc_id

    @property
    def depends_on(self) -> list[str]:
        docs = {self.duplicate_of} if self.duplicate_of else set()
        docs |= {dup.split(":", 1)[0] for dup in self.duplicate_chunks.values()}
        return sorted(docs - {self.doc_id})


@dataclass
class Unchanged:
    ref: SourceRef


@dataclass
class Failed:
    failure: Failure
    raw: bytes | None


@dataclass
class Held:
    """Claimed by another live worker: re-checked at the end of the run."""

    ref: SourceRef


Outcome = Prepared | Unchanged | Failed | Held


class StageFailure(Exception):
    """Carries a classified error plus what was learned before it happened."""

    def __init__(self, error: IngestError, parsers_tried: list[str]) -> None:
        super().__init__(error.reason)
        self.error = error
        self.parsers_tried = parsers_tried


@contextmanager
def stage(name: Stage, summary: RunSummary) -> Iterator[None]:
    """Time a stage and classify whatever it raises."""
    with summary.timed(name):
        try:
            yield
        except StageFailure:
            raise
        except Exception as exc:
            error = classify_keeping_trace(exc, name)
            raise StageFailure(error, list(getattr(exc, "parsers_tried", []))) from exc


def store_read(rt: Runtime, summary: RunSummary, read: Callable[[], Any]) -> Any:
    """A ledger or claims call made before a document is processed: retried like a store
    write; an outage past the policy fails the document (transient, replayable), not the run."""
    with stage(Stage.STORE, summary):
        return call_with_retry(
            read, rt.settings.policies.store_write, rt.store_breaker, stats=rt.retry_stats
        )


def classify_keeping_trace(exc: BaseException, name: Stage) -> IngestError:
    """``classify``, with the original stack trace kept for the DLQ record."""
    error = classify(exc, name)
    if error is not exc:
        error.__traceback__ = exc.__traceback__
        error.__cause__ = exc
    return error


def is_unchanged(record: DocumentRecord | None, version: str, fingerprint: str) -> bool:
    """Whether a document needs no work: same bytes, same pipeline, final state reached."""
    if record is None or record.metadata.get("fingerprint") != fingerprint:
        return False
    if record.version == version and record.status in (DocStatus.INDEXED, DocStatus.DUPLICATE):
        return True
    failed_version = record.metadata.get("failed_version", record.version)
    return failed_version == version and record.error_kind == "permanent"


def prepare(
    ref: SourceRef,
    rt: Runtime,
    summary: RunSummary,
    overrides: Overrides | None = None,
    raw: RawDocument | None = None,
) -> Outcome:
    """Fetch and turn one document into chunks, or say why not. Never raises for the
    document's own faults."""
    overrides = overrides or Overrides()
    s = rt.settings
    parsers_tried: list[str] = []
    try:
        if raw is None:
            with stage(Stage.FETCH, summary):
                raw = fetch(ref, s.sources, s.policies.download)
        previous = store_read(rt, summary, lambda: rt.store.get_document(ref.doc_id))
        if not overrides.force and is_unchanged(previous, raw.version, rt.fingerprint):
            return Unchanged(ref)
        if not store_read(rt, summary, lambda: rt.claims.claim(ref.doc_id)):
            return Held(ref)
        # another worker may have just finished it
        previous = store_read(rt, summary, lambda: rt.store.get_document(ref.doc_id))
        if not overrides.force and is_unchanged(previous, raw.version, rt.fingerprint):
            rt.claims.release([ref.doc_id])
            return Unchanged(ref)
        parse_settings = s.parse
        if overrides.password:
            register_secret(overrides.password)
            parse_settings = s.parse.model_copy(
                update={
                    "passwords": {**s.parse.passwords, ref.doc_id: SecretStr(overrides.password)}
                }
            )
        with stage(Stage.PARSE, summary):
            from genai_ingest.isolation import parse_isolated  # the parsers: only when parsing

            parsed = parse_isolated(
                raw.data, ref.name, parse_settings, uri=ref.uri, doc_id=ref.doc_id
            )
        parsers_tried = parsed.parsers_tried
        with stage(Stage.CLEAN, summary):
            text = clean_text(
                parsed.text,
                s.clean,
                hard_wrapped=parsed.format in HARD_WRAPPED_FORMATS,
                keep_pages=bool(parsed.pages),
            )
        metadata = {
            "doc_id": ref.doc_id,
            "source": ref.uri,
            "source_type": ref.source_type,
            "version": raw.version,
            "parser": parsed.parser,
            "format": parsed.format,
            **{k: v for k, v in parsed.metadata.items() if isinstance(v, str | int | float)},
            **overrides.metadata,
        }
        with stage(Stage.VALIDATE, summary):
            validated = validate_text(text, metadata, _validation_settings(rt, overrides))
        metadata.update(validated.metadata)  # titles and other fields, secrets redacted
        metadata["language"] = validated.language
        with stage(Stage.CHUNK, summary):
            chunks = rt.chunker.split(
                ref.doc_id, validated.text, metadata, paged=bool(parsed.pages)
            )
            for chunk in chunks:
                chunk.metadata = {**metadata, **chunk.metadata}
        with stage(Stage.DEDUP, summary):
            signature = rt.hasher.signature(validated.text)
            _sign_chunks(chunks, rt)
        return Prepared(
            raw=raw,
            parser=parsed.parser,
            parsers_tried=parsed.parsers_tried,
            format=parsed.format,
            language=validated.language,
            text_hash=normalized_text_hash(validated.text),
            signature=signature,
            chunks=chunks,
            previous=previous,
        )
    except StageFailure as failure:
        return Failed(
            Failure.from_error(
                failure.error,
                doc_id=ref.doc_id,
                source=ref.uri,
                version=raw.version if raw else None,
                parsers_tried=failure.parsers_tried or parsers_tried,
            ),
            # a document rejected for secrets keeps only its source as a pointer, not its bytes
            raw.data if raw and not isinstance(failure.error, UnsafeContent) else None,
        )


def _validation_settings(rt: Runtime, overrides: Overrides) -> ValidationSettings:
    update: dict[str, Any] = {}
    if overrides.skip_language_check:
        update["allowed_languages"] = []
    if overrides.unsafe_content:
        update["unsafe_content"] = overrides.unsafe_content
    return rt.settings.validation.model_copy(update=update)


def _sign_chunks(chunks: list[Chunk], rt: Runtime) -> None:
    threshold = rt.settings.dedup.chunk_threshold
    for chunk in chunks:
        signature = rt.hasher.signature(chunk.text)
        chunk.signature = signature_to_bytes(signature)
        chunk.band_keys = rt.hasher.band_keys(signature, threshold)


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
    vectors: list[np.ndarray]
    failed: list[Failed]


def embed_batch(docs: Sequence[Prepared], rt: Runtime, summary: RunSummary) -> Embedded:
    """Embed every kept chunk of the batch in one batched pass, cache first.

    A batch too large for the device or endpoint is split (``embed_adaptive``); an item that
    still fails sends its document to the DLQ. A transient failure is raised (after caching the
    vectors that did work) so the task is retried."""
    model_id = rt.model_id
    wanted = {c.embed_hash: c.embed_text for d in docs if not d.duplicate_of for c in d.chunks}
    cached = rt.cache.get_many(model_id, list(wanted))
    misses = [h for h in wanted if h not in cached]
    errors: dict[str, IngestError] = {}
    if misses:
        with summary.timed(Stage.EMBED):
            result = embed_adaptive(rt.embedder.embed, [wanted[h] for h in misses])
        fresh = {}
        for i, vector in result.vectors.items():
            try:
                fresh[misses[i]] = check_vectors(vector[None, :], 1, rt.embedder.dimension)[0]
            except IngestError as exc:
                errors[misses[i]] = exc
        call_with_retry(
            lambda: rt.cache.put_many(model_id, fresh),
            rt.settings.policies.store_write,
            rt.store_breaker,
            stats=rt.retry_stats,
        )
        summary.add("embeddings_computed", len(fresh))
        errors |= {misses[i]: error for i, error in result.errors.items()}
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
    """Assemble each document's vectors from the cache; a document with a failed or missing
    chunk vector fails (with that chunk's error, else ``missing``)."""
    model_id = rt.model_id
    cached = rt.cache.get_many(model_id, [c.embed_hash for d in docs for c in d.chunks])
    out = Embedded([], [], [])
    for doc in docs:
        hashes = [] if doc.duplicate_of else [c.embed_hash for c in doc.chunks]
        error = next((errors[h] for h in hashes if h in errors), None)
        if error is None and all(h in cached for h in hashes):
            out.docs.append(doc)
            out.vectors.append(
                np.stack([cached[h] for h in hashes])
                if hashes
                else np.zeros((0, rt.embedder.dimension), np.float32)
            )
            continue
        out.failed += failure_for_batch(
            [doc], error or missing or RuntimeError("no vector"), Stage.EMBED
        )
    return out


# --- commit ----------------------------------------------------------------------------------


def commit(doc: Prepared, vectors: np.ndarray, rt: Runtime, summary: RunSummary) -> None:
    """Upsert the document's chunks, delete its stale ones, write its ledger row last.
    Safe to repeat, so a store outage is retried with backoff (``policies.store_write``)."""
    with summary.timed(Stage.STORE):
        written, deleted = call_with_retry(
            lambda: _commit_once(doc, vectors, rt),
            rt.settings.policies.store_write,
            rt.store_breaker,
            stats=rt.retry_stats,
        )
    summary.add("chunks_written", written)
    summary.add("chunks_deleted", deleted)
    summary.add("chunks_duplicate", len(doc.duplicate_chunks))
    summary.add("documents_duplicate" if doc.duplicate_of else "documents_indexed")
    rt.claims.release([doc.doc_id])


def _commit_once(doc: Prepared, vectors: np.ndarray, rt: Runtime) -> tuple[int, int]:
    store = rt.store
    new_ids = [] if doc.duplicate_of else [c.chunk_id for c in doc.chunks]
    written = (
        store.upsert_chunks([EmbeddedChunk(c, v) for c, v in zip(doc.chunks, vectors, strict=True)])
        if new_ids
        else 0
    )
    old_ids = set(doc.previous.chunk_ids) if doc.previous else set()
    stale = (old_ids | store.chunk_ids_of(doc.doc_id)) - set(new_ids)
    deleted = store.delete_chunks(sorted(stale)) if stale else 0
    store.put_document(_ledger_row(doc, new_ids, rt))
    return written, deleted


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


# --- removals --------------------------------------------------------------------------------


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


# --- one runtime per configuration per process -----------------------------------------------

_runtimes: dict[str, Runtime] = {}
_runtimes_lock = threading.Lock()


def settings_key(settings: Settings) -> str:
    """Identity of a configuration, secrets included (never printed)."""
    secrets = sorted(v.get_secret_value() for v in settings.parse.passwords.values())
    return sha256_hex(settings.model_dump_json() + json.dumps(secrets))


def runtime_for(settings: Settings) -> Runtime:
    """The process-wide runtime for ``settings`` (the model is loaded once per process)."""
    key = settings_key(settings)
    with _runtimes_lock:
        if key not in _runtimes:
            _runtimes[key] = Runtime(settings).open()
        return _runtimes[key]
