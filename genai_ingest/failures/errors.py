"""One error taxonomy for every stage.

Three kinds decide what happens to a failure:

* ``permanent``: the document itself is the problem (corrupt, encrypted, empty, unsafe).
  Retrying cannot help: it goes to the DLQ at once.
* ``transient``: an external service misbehaved (timeout, 429/5xx, store outage). Retried with
  backoff; if the budget runs out the document goes to the DLQ as *replayable*.
* ``system``: the pipeline or its environment is broken (model mismatch, missing binary, out of
  memory). Not the document's fault; it goes to the DLQ so nothing is lost, flagged for operators.

Every error carries a stable ``code`` (the DLQ's ``error_class``) and a human ``reason``.
"""

from __future__ import annotations

import errno
import sqlite3
from enum import StrEnum
from typing import Any, ClassVar


class ErrorKind(StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    SYSTEM = "system"


class Stage(StrEnum):
    FETCH = "fetch"
    PARSE = "parse"
    CLEAN = "clean"
    VALIDATE = "validate"
    CHUNK = "chunk"
    DEDUP = "dedup"
    EMBED = "embed"
    STORE = "store"


class IngestError(Exception):
    """Base of all classified pipeline errors."""

    kind: ClassVar[ErrorKind] = ErrorKind.SYSTEM
    code: ClassVar[str] = "ingest_error"

    def __init__(self, reason: str, *, stage: Stage | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle without calling ``__init__`` (whatever a subclass's signature), keeping
        ``reason``, ``stage``, ``retry_after`` and any other attribute: errors cross processes."""
        return _restore, (type(self), self.args, self.__dict__)

    @property
    def replayable(self) -> bool:
        """Whether a later replay without any fix can succeed."""
        return self.kind is not ErrorKind.PERMANENT


def _restore(cls: type[IngestError], args: tuple[Any, ...], state: dict[str, Any]) -> IngestError:
    error = cls.__new__(cls, *args)
    error.__dict__.update(state)
    return error


# --- permanent: the document is the problem -------------------------------------------------


class PermanentError(IngestError):
    kind = ErrorKind.PERMANENT
    code = "permanent"


class SourceNotFound(PermanentError):
    code = "source_not_found"


class ChecksumMismatch(PermanentError):
    code = "checksum_mismatch"


class DocumentTooLarge(PermanentError):
    code = "too_large"


class UnsupportedFormat(PermanentError):
    code = "unsupported_format"


class CorruptDocument(PermanentError):
    code = "corrupt"


class PasswordRequired(PermanentError):
    """Encrypted; replay succeeds once a password is configured."""

    code = "password_required"


class EmptyDocument(PermanentError):
    code = "empty"


class GarbageContent(PermanentError):
    """Text that is not language: ciphertext, mojibake, binary noise, encoded payloads."""

    code = "garbage"


class ValidationFailed(PermanentError):
    code = "validation"


class LanguageNotAllowed(ValidationFailed):
    code = "language_not_allowed"


class UnsafeContent(ValidationFailed):
    code = "unsafe_content"


class EmbeddingRejected(PermanentError):
    """The model produced a vector that may not be written (wrong size, NaN/inf)."""

    code = "embedding_rejected"


class TimeoutSettled(PermanentError):
    """The same bytes timed out on several runs (``policies.parse_timeout``): not retried by
    later runs; a replay with a longer deadline may still read it."""

    code = "timeout_settled"


class ResourceLimit(PermanentError):
    """A per-document limit was reached (memory, redirects); the reason names the setting."""

    code = "resource_limit"


class SkippedSource(PermanentError):
    """Not a document: a special file, a link not followed, an entry that cannot be listed."""

    code = "skipped_source"


class SourceRefused(PermanentError):
    """A URL the source policy forbids: another scheme, a loopback/private/link-local host."""

    code = "source_refused"


# --- transient: an external service misbehaved ----------------------------------------------


class TransientError(IngestError):
    kind = ErrorKind.TRANSIENT
    code = "transient"

    def __init__(
        self, reason: str, *, stage: Stage | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, stage=stage)
        self.retry_after = retry_after


class FetchFailed(TransientError):
    code = "fetch_failed"


class EndpointUnavailable(TransientError):
    code = "endpoint_unavailable"


class ShardFailed(TransientError):
    """The shard run that held this document crashed or timed out on every attempt."""

    code = "shard_failed"


class RateLimited(TransientError):
    code = "rate_limited"


class CircuitOpen(TransientError):
    code = "circuit_open"


class StoreUnavailable(TransientError):
    code = "store_unavailable"


class DeadlineExceeded(TransientError):
    """A download or parse ran past its deadline; the reason names the setting."""

    code = "timeout"


# --- system: the pipeline or its environment is broken --------------------------------------


class SystemFault(IngestError):
    kind = ErrorKind.SYSTEM
    code = "system"


class ModelMismatch(SystemFault):
    """Vectors of another model or dimension than the index records."""

    code = "model_mismatch"


class MissingDependency(SystemFault):
    code = "missing_dependency"


class Unauthorized(SystemFault):
    """An endpoint refused the request's credentials (HTTP 401/403)."""

    code = "unauthorized"


class ResourceExhausted(SystemFault):
    code = "resource_exhausted"


class PayloadTooLarge(TransientError):
    """Batch too large for the device or endpoint (OOM, HTTP 413): split and retry."""

    code = "payload_too_large"


_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EPIPE}


def classify(exc: BaseException, stage: Stage) -> IngestError:
    """Map any exception to the taxonomy. Unknown errors in document stages are permanent
    (the same bytes fail the same way); unknown errors in service stages are transient."""
    if isinstance(exc, IngestError):
        if exc.stage is None:
            exc.stage = stage
        return exc
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or "OutOfMemory" in name:
        return ResourceExhausted(f"out of memory: {exc}", stage=stage)
    if isinstance(exc, TimeoutError | ConnectionError) or "Timeout" in name or "Connect" in name:
        return _transient_for(stage, f"{name}: {exc}")
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return _transient_for(stage, f"{name}: {exc}")
    if isinstance(exc, ImportError):  # the installation, not the document: replay when fixed
        return MissingDependency(f"{name}: {exc}", stage=stage)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return ResourceExhausted(f"disk full: {exc}", stage=stage)
    if stage in (Stage.EMBED, Stage.STORE):
        return _transient_for(stage, f"{name}: {exc}")
    return CorruptDocument(f"{stage.value} failed: {name}: {exc}", stage=stage)


def _transient_for(stage: Stage, reason: str) -> TransientError:
    cls: type[TransientError] = {
        Stage.FETCH: FetchFailed,
        Stage.EMBED: EndpointUnavailable,
        Stage.STORE: StoreUnavailable,
    }.get(stage, TransientError)
    return cls(reason, stage=stage)


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying (used by Prefect ``retry_condition_fn`` and tenacity)."""
    return isinstance(exc, TransientError)


# --- SQLite (the embedded store and the embedding cache) --------------------------------------

#: SQLite errors that mean "the database is busy or unreachable right now", not a bug.
_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly")


def classify_sqlite_error(exc: sqlite3.OperationalError) -> Exception:
    """``StoreUnavailable`` for a busy or unreachable database; the error itself otherwise."""
    message = str(exc).lower()
    if any(m in message for m in _SQLITE_UNAVAILABLE):
        return StoreUnavailable(f"embedded store unavailable: {exc}", stage=Stage.STORE)
    return exc
