"""Parse documents in worker processes, so one bad document fails alone.

docling-parse (C++), pdfium and Tesseract run in-process in ``parse_document``: a segfault
there would kill the ingestion run and a pathological document could stall it. ``ParserPool``
runs ``parse_document`` in a ``pebble`` process pool instead: a crashed worker costs only its
document (``CorruptDocument``), pebble replaces the worker and the next documents parse as usual.

Limits per document (``ParseSettings``):

* a deadline that grows with the work: ``timeout_s`` plus ``timeout_per_mb_s`` per MB of PDF,
  Office or image bytes (``text_timeout_per_mb_s`` for text, HTML, CSV, e-mail) plus
  ``timeout_per_page_s`` per PDF page, at most ``max_timeout_s``. A worker past it is killed;
  the document fails as ``timeout`` (transient: a replay may get a less loaded machine);
* a memory cap, ``worker_memory_mb``, set as ``RLIMIT_DATA`` in each worker (heap and anonymous
  mappings; ``RLIMIT_AS`` would also count the gigabytes of address space that torch and
  docling reserve without using). An allocation past it fails as ``resource_limit``;
* at most ``max_text_chars`` of text come back (``too_large``), so no single document can make
  the main process clean, validate and chunk without bound.

Workers are *spawned*, never forked: the parent holds threads (torch/OpenMP, Prefect, pebble's
own) and forking a threaded process can deadlock the child on a lock copied mid-use. A spawned
worker is a clean interpreter that imports only the parser (never the embedding model), caps
native thread pools, and imports docling once at start-up (``max_tasks_per_worker`` documents).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import pebble
from pebble.common.types import RemoteTraceback

from genai_ingest.config import ParseSettings
from genai_ingest.failures.errors import (
    CorruptDocument,
    DeadlineExceeded,
    DocumentTooLarge,
    IngestError,
    ResourceLimit,
    Stage,
    SystemFault,
    classify,
)
from genai_ingest.models import ParsedDocument
from genai_ingest.parse.deadline import parse_deadline_s
from genai_ingest.parse.document import parse_document

T = TypeVar("T")

_THREAD_VARS = ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_WARMUP = b"# Warm-up\n\nThis document loads the docling converter once per worker."
# zip (Office, EPUB), OLE, PNG, JPEG, GIF, TIFF, WebP/RIFF, BMP
_OUT_OF_MEMORY = ("MemoryError", "bad_alloc", "Cannot allocate memory", "out of memory")


class ParserPool:
    """Worker processes running ``parse_document``; safe to call from several threads."""

    def __init__(self, settings: ParseSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._closed = False
        self._pool = self._new_pool()

    def parse(
        self, data: bytes, name: str, settings: ParseSettings, *, uri: str = "", doc_id: str = ""
    ) -> ParsedDocument:
        """``parse_document`` in a worker, within the document's deadline and memory cap; a
        crash raises ``CorruptDocument``, the deadline ``DeadlineExceeded``."""
        deadline = parse_deadline_s(data, settings)
        return self._submit(
            parse_bounded, data, name, settings, timeout=deadline, uri=uri, doc_id=doc_id
        )

    def close(self) -> None:
        """Accept no more documents, let those in flight finish, then end the workers."""
        with self._lock:
            self._closed = True
        self._pool.close()
        self._pool.join()

    def _submit(self, fn: Callable[..., T], *args: Any, timeout: float, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker; raise its error or a classified one."""
        try:
            try:
                return self._live_pool().schedule(fn, args, kwargs, timeout=timeout).result()
            except BrokenProcessPool:  # aborted with the pool, not for this document: once more
                return self._live_pool().schedule(fn, args, kwargs, timeout=timeout).result()
        except Exception as exc:
            error = _failure(exc, timeout)
            if error is exc:
                raise
            raise error from exc

    def _live_pool(self) -> pebble.ProcessPool:
        with self._lock:
            if self._closed:
                raise RuntimeError("ParserPool is closed")
            if not self._pool.active:  # pebble gives up when a worker dies between documents
                self._pool.stop()
                self._pool.join()
                self._pool = self._new_pool()
            return self._pool

    def _new_pool(self) -> pebble.ProcessPool:
        workers = self._settings.workers
        threads = max(1, min(4, (os.cpu_count() or 1) // workers))
        return pebble.ProcessPool(
            max_workers=workers,
            max_tasks=self._settings.max_tasks_per_worker,
            initializer=_init_worker,
            initargs=(self._settings, threads),
            context=multiprocessing.get_context("spawn"),
        )

    def _terminate(self) -> None:
        """End the workers now, abandoning documents in flight (interpreter exit only)."""
        with self._lock:
            self._closed = True
        self._pool.stop()
        self._pool.join()


_shared: ParserPool | None = None
_shared_lock = threading.Lock()
_leases = 0  # runs of this process in their parsing phase
_leased_workers: int | None = None  # how many workers their parsing can keep busy at once


@contextlib.contextmanager
def parser_pool_lease(concurrent: int) -> Iterator[None]:
    """A run's parsing phase: the shared pool gets no more workers than it parses documents at
    once (``concurrent``; each idle worker holds docling and torch, ~0.9 GB), and ends with the
    last lease, so its workers are gone before the run embeds (a later parse starts it again)."""
    global _leases, _leased_workers
    with _shared_lock:
        _leases += 1
        _leased_workers = max(concurrent, _leased_workers or 0)
    try:
        yield
    finally:
        with _shared_lock:
            _leases -= 1
            pool = _shared if _leases == 0 else None
            if _leases == 0:
                _forget_shared_pool()
        if pool is not None:
            pool.close()


def parse_isolated(
    data: bytes, name: str, settings: ParseSettings, *, uri: str = "", doc_id: str = ""
) -> ParsedDocument:
    """``parse_document`` in this process's shared ``ParserPool`` (created on first use with
    these settings' ``workers``), or in-process when ``settings.isolate`` is off."""
    if not settings.isolate:
        return parse_bounded(data, name, settings, uri=uri, doc_id=doc_id)
    return _shared_pool(settings).parse(data, name, settings, uri=uri, doc_id=doc_id)


def parse_bounded(
    data: bytes, name: str, settings: ParseSettings, *, uri: str = "", doc_id: str = ""
) -> ParsedDocument:
    """``parse_document`` with its memory errors and its text size classified as limits."""
    try:
        parsed = parse_document(data, name, settings, uri=uri, doc_id=doc_id)
    except MemoryError:
        raise _memory_limit(settings) from None
    except IngestError as exc:
        if any(sign in exc.reason for sign in _OUT_OF_MEMORY):
            raise _memory_limit(settings) from None
        raise
    if len(parsed.text) > settings.max_text_chars:
        raise DocumentTooLarge(
            f"{len(parsed.text):,} characters of text after parsing exceed the limit of "
            f"{settings.max_text_chars:,} (parse.max_text_chars)",
            stage=Stage.PARSE,
        )
    return parsed


def _memory_limit(settings: ParseSettings) -> ResourceLimit:
    return ResourceLimit(
        f"parsing needs more than {settings.worker_memory_mb} MB of memory "
        "(parse.worker_memory_mb)",
        stage=Stage.PARSE,
    )


def _shared_pool(settings: ParseSettings) -> ParserPool:
    global _shared
    with _shared_lock:
        if _shared is None:
            workers = min(settings.workers, _leased_workers or settings.workers)
            _shared = ParserPool(settings.model_copy(update={"workers": workers}))
            atexit.register(_shared._terminate)
        return _shared


def _forget_shared_pool() -> None:
    global _shared, _leased_workers
    if _shared is not None:
        atexit.unregister(_shared._terminate)
    _shared, _leased_workers = None, None


def _failure(exc: Exception, timeout: float) -> IngestError:
    if isinstance(exc, pebble.ProcessExpired):
        return CorruptDocument(_crash_reason(exc.exitcode), stage=Stage.PARSE)
    if isinstance(exc, TimeoutError) and not isinstance(exc.__cause__, RemoteTraceback):
        return DeadlineExceeded(
            f"parse timed out after {timeout:g}s, the deadline for this document "
            "(parse.timeout_s plus parse.timeout_per_mb_s, parse.text_timeout_per_mb_s or "
            "parse.timeout_per_page_s for its size)",
            stage=Stage.PARSE,
        )
    if isinstance(exc, BrokenProcessPool):
        return SystemFault(f"parser pool broken: {exc}", stage=Stage.PARSE)
    return classify(exc, Stage.PARSE)


def _crash_reason(exitcode: int) -> str:
    if exitcode < 0:
        try:
            cause = f"{signal.Signals(-exitcode).name}, exit code {exitcode}"
        except ValueError:
            cause = f"signal {-exitcode}, exit code {exitcode}"
    else:
        cause = f"exit code {exitcode}"
    return f"parser process crashed ({cause}) on this document"


def _init_worker(settings: ParseSettings, threads: int) -> None:
    """Cap memory and native thread pools, then load docling once (best effort: a real
    problem surfaces on the first document)."""
    cap = settings.worker_memory_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(
        resource.RLIMIT_DATA, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard)
    )
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    with contextlib.suppress(Exception):
        parse_document(_WARMUP, "warmup.md", settings)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
