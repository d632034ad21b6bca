"""The dead-letter queue in folders of an object store, on S3 or on local disk.

Layout (same on S3 and on disk)::

    dlq/ingestion/<first failure, UTC>/<doc_id>.json   the entry (history, traceback, status)
    dlq/ingestion/<first failure, UTC>/<doc_id>.raw    the raw bytes, when there are any
    dlq/ingestion/index/<doc_id>.json                   pointer: entry key, status, stage, class

``get`` reads the pointer then the entry; ``entries`` lists only ``index/`` and reads the
entries whose pointer matches the filter. The pointer is written last (the commit point).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from genai_ingest.failures.dlq import DeadLetter, EntryStatus, Failure, close_entry, merge_failure
from genai_ingest.sources.s3 import PAGE_SIZE, split_s3_uri
from genai_ingest.stores.object_store import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    local_path,
)

DLQ_ROOT = "dlq/ingestion"
_READ_THREADS = 16


def _timestamp(entry: DeadLetter) -> str:
    return entry.first_failed_at.strftime("%Y%m%dT%H%M%SZ")


class ObjectStoreDeadLetterQueue:
    """``DeadLetterQueue`` over an ``ObjectStore`` (layout in the module docstring).

    Writers in one process are serialised; two processes writing the same entry at once
    keep the last write (the pipeline dead-letters from the flow process only)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._lock = threading.Lock()

    # keys
    @staticmethod
    def _index_key(entry_id: str) -> str:
        return f"{DLQ_ROOT}/index/{entry_id}.json"

    @staticmethod
    def _entry_key(entry: DeadLetter) -> str:
        return f"{DLQ_ROOT}/{_timestamp(entry)}/{entry.doc_id}.json"

    def _pointer(self, entry_id: str) -> dict[str, Any] | None:
        data = self.store.read(self._index_key(entry_id))
        return json.loads(data) if data is not None else None

    def _load(self, pointer: dict[str, Any]) -> DeadLetter | None:
        data = self.store.read(pointer["key"])
        return DeadLetter.from_json(json.loads(data)) if data is not None else None

    def _save(self, entry: DeadLetter) -> None:
        key = self._entry_key(entry)
        self.store.write(key, json.dumps(entry.to_json()).encode())
        pointer = {
            "key": key,
            "raw_key": key.removesuffix(".json") + ".raw",
            "status": entry.status.value,
            "stage": entry.stage,
            "error_class": entry.error_class,
        }
        self.store.write(self._index_key(entry.entry_id), json.dumps(pointer).encode())

    # protocol
    def put(self, failure: Failure, raw: bytes | None) -> DeadLetter:
        with self._lock:
            entry = merge_failure(self.get(failure.doc_id), failure, raw)
            if raw is not None:
                self.store.write(self._entry_key(entry).removesuffix(".json") + ".raw", raw)
            self._save(entry)
        return entry

    def get(self, entry_id: str) -> DeadLetter | None:
        pointer = self._pointer(entry_id)
        return self._load(pointer) if pointer else None

    def entries(
        self,
        *,
        status: EntryStatus | None = EntryStatus.OPEN,
        stage: str | None = None,
        error_class: str | None = None,
    ) -> list[DeadLetter]:
        wanted = {"status": status and status.value, "stage": stage, "error_class": error_class}
        index_keys = list(self.store.keys(f"{DLQ_ROOT}/index/"))
        with ThreadPoolExecutor(_READ_THREADS) as pool:
            pointers = [p for p in pool.map(self._read_json, index_keys) if p is not None]
            matching = [
                p for p in pointers if all(v is None or p[k] == v for k, v in wanted.items())
            ]
            found = [e for e in pool.map(self._load, matching) if e is not None]
        return sorted(found, key=lambda e: (e.first_failed_at, e.entry_id))

    def _read_json(self, key: str) -> dict[str, Any] | None:
        data = self.store.read(key)
        return json.loads(data) if data is not None else None

    def raw(self, entry_id: str) -> bytes | None:
        pointer = self._pointer(entry_id)
        return self.store.read(pointer["raw_key"]) if pointer else None

    def _update(self, entry_id: str, change: Any) -> None:
        with self._lock:
            entry = self.get(entry_id)
            if entry is None:
                raise KeyError(entry_id)
            self._save(change(entry))

    def resolve(self, entry_id: str, note: str) -> None:
        self._update(entry_id, lambda e: close_entry(e, EntryStatus.RESOLVED, note))

    def discard(self, entry_id: str, reason: str) -> None:
        self._update(entry_id, lambda e: close_entry(e, EntryStatus.DISCARDED, reason))

    def set_overrides(self, entry_id: str, overrides: dict[str, Any]) -> None:
        def apply(entry: DeadLetter) -> DeadLetter:
            entry.overrides = {**entry.overrides, **overrides}
            return entry

        self._update(entry_id, apply)

    def close(self) -> None:
        """Nothing to release: every call is one request."""


class S3DeadLetterQueue(ObjectStoreDeadLetterQueue):
    """The DLQ in a bucket (under ``folder``), through prefect-aws."""

    def __init__(self, bucket: str, folder: str = "", page_size: int = PAGE_SIZE) -> None:
        super().__init__(S3ObjectStore(bucket, folder, page_size))


class LocalFolderDeadLetterQueue(ObjectStoreDeadLetterQueue):
    """The DLQ in a local (or mounted) folder, same layout as on S3."""

    def __init__(self, root: Path) -> None:
        super().__init__(LocalObjectStore(root))


def open_dlq_url(url: str) -> ObjectStoreDeadLetterQueue:
    """``s3://bucket/folder`` → S3; ``file:///folder`` or a path → local folder."""
    if url.startswith("s3://"):
        return S3DeadLetterQueue(*split_s3_uri(url))
    return LocalFolderDeadLetterQueue(local_path(url))
