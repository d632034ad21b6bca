"""Dead-letter queue: every document that could not be indexed, with what is needed to fix and
replay it (raw bytes or a pointer, stage, error class, reason, stack trace, attempt history).

One entry per document: a new failure of the same document appends to its history. A success
on replay resolves the entry and keeps the history."""

from __future__ import annotations

import traceback as tb
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from genai_ingest.failures.errors import IngestError
from genai_ingest.failures.redact import redact
from genai_ingest.models import sha256_hex, utcnow


class EntryStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    DISCARDED = "discarded"


@dataclass
class Failure:
    """One classified failure of one document, as the pipeline reports it."""

    doc_id: str
    source: str
    stage: str
    error_class: str
    error_kind: str
    reason: str
    traceback: str
    version: str | None = None
    parsers_tried: list[str] = field(default_factory=list)
    at: datetime = field(default_factory=utcnow)

    @classmethod
    def from_error(
        cls,
        error: IngestError,
        *,
        doc_id: str,
        source: str,
        version: str | None = None,
        parsers_tried: list[str] | None = None,
    ) -> Failure:
        trace = "".join(tb.format_exception(type(error), error, error.__traceback__))
        return cls(
            doc_id=doc_id,
            source=source,
            stage=(error.stage.value if error.stage else "unknown"),
            error_class=error.code,
            error_kind=error.kind.value,
            reason=redact(error.reason),
            traceback=redact(trace),
            version=version,
            parsers_tried=list(parsers_tried or []),
        )


@dataclass
class DeadLetter:
    entry_id: str
    doc_id: str
    source: str
    stage: str
    error_class: str
    error_kind: str
    reason: str
    traceback: str
    status: EntryStatus
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    version: str | None = None
    raw_sha256: str | None = None
    raw_size: int | None = None
    parsers_tried: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    resolution: str | None = None

    @property
    def replayable(self) -> bool:
        return self.error_kind != "permanent"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("first_failed_at", "last_failed_at"):
            data[key] = data[key].isoformat()
        data["status"] = self.status.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeadLetter:
        data = dict(data)
        for key in ("first_failed_at", "last_failed_at"):
            data[key] = datetime.fromisoformat(data[key])
        data["status"] = EntryStatus(data["status"])
        return cls(**data)


def merge_failure(existing: DeadLetter | None, failure: Failure, raw: bytes | None) -> DeadLetter:
    """The entry after recording ``failure``: new, or the old one with one more attempt."""
    attempt = {
        "at": failure.at.isoformat(),
        "stage": failure.stage,
        "error_class": failure.error_class,
        "error_kind": failure.error_kind,
        "reason": failure.reason,
        "version": failure.version,
    }
    raw_sha = sha256_hex(raw) if raw is not None else None
    if existing is None:
        return DeadLetter(
            entry_id=failure.doc_id,
            doc_id=failure.doc_id,
            source=failure.source,
            stage=failure.stage,
            error_class=failure.error_class,
            error_kind=failure.error_kind,
            reason=failure.reason,
            traceback=failure.traceback,
            status=EntryStatus.OPEN,
            attempts=1,
            first_failed_at=failure.at,
            last_failed_at=failure.at,
            version=failure.version,
            raw_sha256=raw_sha,
            raw_size=len(raw) if raw is not None else None,
            parsers_tried=failure.parsers_tried,
            history=[attempt],
        )
    existing.stage = failure.stage
    existing.error_class = failure.error_class
    existing.error_kind = failure.error_kind
    existing.reason = failure.reason
    existing.traceback = failure.traceback
    existing.status = EntryStatus.OPEN
    existing.attempts += 1
    existing.last_failed_at = failure.at
    existing.version = failure.version or existing.version
    if raw_sha is not None:
        existing.raw_sha256, existing.raw_size = raw_sha, len(raw or b"")
    existing.parsers_tried = failure.parsers_tried or existing.parsers_tried
    existing.history.append(attempt)
    existing.resolution = None
    return existing


@runtime_checkable
class DeadLetterQueue(Protocol):
    """Where failed documents wait for a fix and a replay."""

    def put(self, failure: Failure, raw: bytes | None) -> DeadLetter:
        """Record a failure (and the raw bytes, when there are any); returns the entry."""

    def get(self, entry_id: str) -> DeadLetter | None: ...

    def entries(
        self,
        *,
        status: EntryStatus | None = EntryStatus.OPEN,
        stage: str | None = None,
        error_class: str | None = None,
    ) -> list[DeadLetter]:
        """Entries, oldest failure first."""

    def raw(self, entry_id: str) -> bytes | None:
        """The raw bytes stored with the entry, if any."""

    def resolve(self, entry_id: str, note: str) -> None:
        """Mark resolved (a replay indexed it); the history is kept."""

    def discard(self, entry_id: str, reason: str) -> None: ...

    def set_overrides(self, entry_id: str, overrides: dict[str, Any]) -> None:
        """Non-secret fixes to apply on replay (metadata, validation overrides)."""

    def close(self) -> None: ...


def close_entry(entry: DeadLetter, status: EntryStatus, note: str) -> DeadLetter:
    entry.status = status
    entry.resolution = redact(note)
    entry.history.append(
        {"at": utcnow().isoformat(), "status": status.value, "note": entry.resolution}
    )
    return entry
