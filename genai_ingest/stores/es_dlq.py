"""The dead-letter queue in Elasticsearch: entries in ``{alias}-dlq``, raw bytes base64 in
``{alias}-dlq-raw``, stored once per sha256. Writes use ``refresh=wait_for`` (they are rare,
and the triage app in another process lists them by search right after a run)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError

from genai_ingest.config import Settings
from genai_ingest.failures.dlq import DeadLetter, EntryStatus, Failure, close_entry, merge_failure
from genai_ingest.failures.errors import StoreUnavailable
from genai_ingest.stores.es_bulk import b64, unb64
from genai_ingest.stores.es_client import (
    api_error,
    client_from_settings,
    create_index,
    scan,
    translated,
)
from genai_ingest.stores.es_mapping import dlq_mapping, dlq_raw_mapping

#: Raw bytes larger than this are not copied into the DLQ index; the entry keeps its sha256 and
#: the source URI as the pointer (a bulk request over ``http.max_content_length`` would fail).
MAX_RAW_DLQ_BYTES = 32 * 1024 * 1024
#: Read-modify-write attempts when other writers keep winning the optimistic-concurrency race.
MAX_CONCURRENT_UPDATES = 10


class ElasticsearchDeadLetterQueue:
    """``DeadLetterQueue`` on Elasticsearch (up to ``MAX_RAW_DLQ_BYTES`` of raw bytes per
    entry; larger ones keep the source URI as pointer). Read-modify-write uses optimistic
    concurrency (``if_seq_no``), like a transaction."""

    def __init__(self, client: Elasticsearch, alias: str) -> None:
        self.client = client
        self.index = f"{alias}-dlq"
        self.raw_index = f"{alias}-dlq-raw"
        create_index(client, self.index, dlq_mapping())
        create_index(client, self.raw_index, dlq_raw_mapping())

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticsearchDeadLetterQueue:
        return cls(client_from_settings(settings), settings.elasticsearch.index)

    def _fetch(self, entry_id: str) -> tuple[DeadLetter | None, dict[str, Any]]:
        with translated("get dlq entry"):
            try:
                found = self.client.get(index=self.index, id=entry_id)
            except NotFoundError:
                return None, {"op_type": "create"}
        version = {"if_seq_no": found["_seq_no"], "if_primary_term": found["_primary_term"]}
        return DeadLetter.from_json(found["_source"]["entry"]), version

    def _update(
        self, entry_id: str, change: Callable[[DeadLetter | None], DeadLetter]
    ) -> DeadLetter:
        """Apply ``change`` to the stored entry; retried when another writer got there first."""
        for _ in range(MAX_CONCURRENT_UPDATES):
            existing, version = self._fetch(entry_id)
            entry = change(existing)
            try:
                self.client.index(
                    index=self.index,
                    id=entry.entry_id,
                    document=dlq_source(entry),
                    refresh="wait_for",
                    **version,
                )
                return entry
            except ApiError as exc:
                if exc.status_code != 409:  # 409: another writer got there first
                    raise api_error(exc, "write dlq entry") from exc
            except TransportError as exc:
                raise api_error(exc, "write dlq entry") from exc
        raise StoreUnavailable(f"dlq entry {entry_id}: too many concurrent writers")

    def put(self, failure: Failure, raw: bytes | None) -> DeadLetter:
        if raw is not None and len(raw) <= MAX_RAW_DLQ_BYTES:
            self._put_raw(raw)
        return self._update(failure.doc_id, lambda existing: merge_failure(existing, failure, raw))

    def _put_raw(self, raw: bytes) -> None:
        sha = hashlib.sha256(raw).hexdigest()
        with translated("write dlq raw"):
            try:
                self.client.index(
                    index=self.raw_index,
                    id=sha,
                    document={"data": b64(raw), "size": len(raw)},
                    op_type="create",
                )
            except ApiError as exc:
                if exc.status_code != 409:  # already stored: same bytes
                    raise

    def get(self, entry_id: str) -> DeadLetter | None:
        return self._fetch(entry_id)[0]

    def entries(
        self,
        *,
        status: EntryStatus | None = EntryStatus.OPEN,
        stage: str | None = None,
        error_class: str | None = None,
    ) -> list[DeadLetter]:
        filters = [
            {"term": {field: str(value)}}
            for field, value in (("status", status), ("stage", stage), ("error_class", error_class))
            if value is not None
        ]
        hits = scan(self.client, self.index, {"bool": {"filter": filters}}, "entry_id", True)
        return sorted(
            (DeadLetter.from_json(hit["_source"]["entry"]) for hit in hits),
            key=lambda e: (e.first_failed_at, e.entry_id),
        )

    def raw(self, entry_id: str) -> bytes | None:
        entry = self.get(entry_id)
        if entry is None or entry.raw_sha256 is None:
            return None
        with translated("get dlq raw"):
            try:
                found = self.client.get(index=self.raw_index, id=entry.raw_sha256)
            except NotFoundError:
                return None
        return unb64(found["_source"]["data"])

    def resolve(self, entry_id: str, note: str) -> None:
        self._update(
            entry_id, lambda e: close_entry(_required(entry_id, e), EntryStatus.RESOLVED, note)
        )

    def discard(self, entry_id: str, reason: str) -> None:
        self._update(
            entry_id, lambda e: close_entry(_required(entry_id, e), EntryStatus.DISCARDED, reason)
        )

    def set_overrides(self, entry_id: str, overrides: dict[str, Any]) -> None:
        def apply(existing: DeadLetter | None) -> DeadLetter:
            entry = _required(entry_id, existing)
            entry.overrides = {**entry.overrides, **overrides}
            return entry

        self._update(entry_id, apply)

    def drop(self) -> None:
        """Delete the DLQ indexes."""
        with translated("delete dlq"):
            self.client.indices.delete(index=[self.index, self.raw_index], ignore_unavailable=True)

    def close(self) -> None:
        self.client.close()


def _required(entry_id: str, entry: DeadLetter | None) -> DeadLetter:
    if entry is None:
        raise KeyError(entry_id)
    return entry


def dlq_source(entry: DeadLetter) -> dict[str, Any]:
    """A DLQ entry as an indexed document: filter fields plus the entry's JSON."""
    return {
        "entry_id": entry.entry_id,
        "status": entry.status.value,
        "stage": entry.stage,
        "error_class": entry.error_class,
        "first_failed_at": entry.first_failed_at.isoformat(),
        "last_failed_at": entry.last_failed_at.isoformat(),
        "entry": entry.to_json(),
    }
