"""Counters and per-stage timings of one run."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from genai_ingest.failures.dlq import Failure
from genai_ingest.failures.errors import Stage

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
    "documents_repointed",
)


class RunSummary:
    """Counters and per-stage timings of one run; thread-safe.

    A plain class on purpose: Prefect walks a dataclass task parameter field by field, and that
    walk raced with the threads updating the counters ("Failed to resolve inputs")."""

    __slots__ = ("_lock", "counts", "failures", "stage_seconds")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.stage_seconds: dict[str, float] = defaultdict(float)
        self.failures: list[dict[str, str]] = []
        self._lock = threading.Lock()

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
