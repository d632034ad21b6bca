"""``DocumentClaims`` on Elasticsearch: one claim document per document id in ``{alias}-claims``.

A free document is claimed with a create-only write (``op_type=create``: exactly one of
several racing workers succeeds). An expired claim is taken over, renewed or released with
optimistic concurrency (``if_seq_no``/``if_primary_term`` of the version just read), so a
takeover race also has exactly one winner. Reads are real-time GETs: no refresh is needed.
Expiry is compared on the claimer's clock (epoch seconds); leases are minutes, far above the
skew of NTP-synchronised nodes."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from elasticsearch import ApiError, ConflictError, Elasticsearch, NotFoundError, TransportError

from genai_ingest.failures.errors import Stage, StoreUnavailable, SystemFault

CLAIMS_MAPPING = {
    "dynamic": "strict",
    "properties": {"owner": {"type": "keyword"}, "expires_at": {"type": "double"}},
}


def claims_index(alias: str) -> str:
    """The claims index beside the chunk generations and ledgers of ``alias``."""
    return f"{alias}-claims"


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Outages and back-pressure as ``StoreUnavailable`` (transient), other API errors as
    ``SystemFault``; conflicts and missing documents are handled by the callers."""
    try:
        yield
    except (ConflictError, NotFoundError):
        raise
    except ApiError as exc:
        status = exc.status_code
        error = StoreUnavailable if status in (408, 429) or status >= 500 else SystemFault
        reason = f"elasticsearch claims {action}: {status} {exc.message}"
        raise error(reason, stage=Stage.STORE) from exc
    except TransportError as exc:
        raise StoreUnavailable(f"elasticsearch claims {action}: {exc}", stage=Stage.STORE) from exc


class ElasticsearchClaims:
    """Claims in ``{alias}-claims`` (created on first use)."""

    def __init__(self, client: Elasticsearch, alias: str) -> None:
        self.client = client
        self.index = claims_index(alias)
        self._ready = False

    def _ensure_index(self) -> None:
        if self._ready:
            return
        with _translated("create index"):
            try:
                self.client.indices.create(
                    index=self.index,
                    mappings=CLAIMS_MAPPING,
                    settings={"number_of_shards": 1, "auto_expand_replicas": "0-1"},
                )
            except ApiError as exc:
                if exc.error != "resource_already_exists_exception":
                    raise
        self._ready = True

    def _get(self, doc_id: str) -> dict[str, Any] | None:
        self._ensure_index()
        with _translated("get"):
            try:
                return dict(self.client.get(index=self.index, id=doc_id))
            except NotFoundError:
                return None

    def _write_if(self, doc_id: str, found: dict[str, Any], body: dict[str, Any]) -> bool:
        """Overwrite the claim read as ``found`` unless someone wrote it since."""
        with _translated("update"):
            try:
                self.client.index(
                    index=self.index,
                    id=doc_id,
                    document=body,
                    if_seq_no=found["_seq_no"],
                    if_primary_term=found["_primary_term"],
                )
                return True
            except ConflictError:
                return False

    def claim(self, doc_id: str, owner: str, lease_s: float) -> bool:
        self._ensure_index()
        body = {"owner": owner, "expires_at": time.time() + lease_s}
        with _translated("create"):
            try:
                self.client.create(index=self.index, id=doc_id, document=body)
                return True
            except ConflictError:
                pass
        found = self._get(doc_id)
        if found is None:  # released between our create and our read: race for it again
            return self.claim(doc_id, owner, lease_s)
        claim = found["_source"]
        if claim["owner"] != owner and claim["expires_at"] >= time.time():
            return False
        return self._write_if(doc_id, found, body)

    def renew(self, doc_ids: Sequence[str], owner: str, lease_s: float) -> set[str]:
        lost = set()
        for doc_id in doc_ids:
            found = self._get(doc_id)
            body = {"owner": owner, "expires_at": time.time() + lease_s}
            if (
                found is None
                or found["_source"]["owner"] != owner
                or not self._write_if(doc_id, found, body)
            ):
                lost.add(doc_id)
        return lost

    def release(self, doc_ids: Sequence[str], owner: str) -> None:
        for doc_id in doc_ids:
            found = self._get(doc_id)
            if found is None or found["_source"]["owner"] != owner:
                continue
            # taken over or gone meanwhile: no longer ours to drop
            with _translated("delete"), suppress(ConflictError, NotFoundError):
                self.client.delete(
                    index=self.index,
                    id=doc_id,
                    if_seq_no=found["_seq_no"],
                    if_primary_term=found["_primary_term"],
                )

    def holder(self, doc_id: str) -> tuple[str, float] | None:
        found = self._get(doc_id)
        if found is None:
            return None
        return found["_source"]["owner"], float(found["_source"]["expires_at"])

    def close(self) -> None:
        """The client belongs to the store."""
