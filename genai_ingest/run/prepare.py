"""Per document: fetch → skip if unchanged → parse → clean → validate → chunk, as a plain
function (``prepare``) that returns an ``Outcome`` and never raises for the document's own
faults: any failure is classified and becomes a ``Failed`` for the DLQ."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import SecretStr

from genai_ingest.config import ValidationSettings
from genai_ingest.failures.dlq import Failure
from genai_ingest.failures.errors import (
    DeadlineExceeded,
    IngestError,
    Stage,
    StoreUnavailable,
    TimeoutSettled,
    UnsafeContent,
    classify,
)
from genai_ingest.failures.redact import register_secret
from genai_ingest.failures.resilience import call_with_retry
from genai_ingest.models import Chunk, DocStatus, DocumentRecord, RawDocument, SourceRef
from genai_ingest.parse.ocr import can_ocr
from genai_ingest.run.runtime import Runtime
from genai_ingest.run.summary import RunSummary
from genai_ingest.sources.discovery import fetch
from genai_ingest.text.clean import clean_text
from genai_ingest.text.dedup import normalized_text_hash, signature_to_bytes
from genai_ingest.text.validate import validate_text

#: Formats whose text keeps the line breaks of the page: reflowed into paragraphs when cleaned.
HARD_WRAPPED_FORMATS = frozenset({"pdf", "image"})


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
    pages_without_ocr: str = ""  # pages that needed OCR while Tesseract was missing
    #: stored documents this one outranks as the copy to keep: redone after its commit
    displaces: set[str] = field(default_factory=set)

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


def is_unchanged(
    record: DocumentRecord | None, version: str, fingerprint: str, ocr_languages: str = "eng"
) -> bool:
    """Whether a document needs no work: same bytes, same pipeline, final state reached (and
    no page left without OCR that Tesseract, installed since, could now read)."""
    if record is None or record.metadata.get("fingerprint") != fingerprint:
        return False
    if record.metadata.get("pages_without_ocr") and can_ocr(ocr_languages):
        return False
    if record.metadata.get("displaced_by"):  # a copy ranked before it arrived: redo
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
        if not overrides.force and is_unchanged(
            previous, raw.version, rt.fingerprint, s.parse.ocr_languages
        ):
            return Unchanged(ref)
        if not store_read(rt, summary, lambda: rt.claims.claim(ref.doc_id)):
            return Held(ref)
        # another worker may have just finished it
        previous = store_read(rt, summary, lambda: rt.store.get_document(ref.doc_id))
        if not overrides.force and is_unchanged(
            previous, raw.version, rt.fingerprint, s.parse.ocr_languages
        ):
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
            from genai_ingest.parse.isolation import (
                parse_isolated,  # the parsers: only when parsing
            )

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
            pages_without_ocr=parsed.metadata.get("pages_without_ocr", ""),
        )
    except StageFailure as failure:
        if raw is not None and is_parse_timeout(failure.error):
            failure.error = settle_repeated_timeout(failure.error, rt, ref, raw.version)
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


def is_parse_timeout(error: IngestError) -> bool:
    return isinstance(error, DeadlineExceeded) and error.stage is Stage.PARSE


def settle_repeated_timeout(
    error: IngestError, rt: Runtime, ref: SourceRef, version: str
) -> IngestError:
    """``error``, or a permanent ``TimeoutSettled`` once these bytes timed out on as many
    runs as ``policies.parse_timeout.settle_after_runs`` (counted in the DLQ entry's history)."""
    try:
        entry = rt.dlq.get(ref.doc_id)
    except StoreUnavailable:
        return error  # cannot count: stays transient
    runs = 1 + sum(
        1
        for attempt in (entry.history if entry else [])
        if attempt.get("stage") == Stage.PARSE.value
        and attempt.get("error_class") in (DeadlineExceeded.code, TimeoutSettled.code)
        and attempt.get("version") == version
    )
    limit = rt.settings.policies.parse_timeout.settle_after_runs
    if runs < limit:
        return error
    settled = TimeoutSettled(
        f"{error.reason}; timed out on {runs} runs of these bytes, so later runs skip them "
        f"(policies.parse_timeout.settle_after_runs={limit}; replay after raising "
        "parse.max_timeout_s)",
        stage=Stage.PARSE,
    )
    settled.__traceback__, settled.__cause__ = error.__traceback__, error
    return settled


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
