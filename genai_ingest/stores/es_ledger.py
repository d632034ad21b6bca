"""Ledger rows as Elasticsearch documents: the lookup fields indexed, the full record stored
as-is (the same JSON the embedded store keeps)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from genai_ingest.models import DocStatus, DocumentRecord
from genai_ingest.stores.es_bulk import b64, unb64


def record_source(record: DocumentRecord) -> dict[str, Any]:
    """A ledger row as an indexed document."""
    data = dict(record.__dict__)
    data["status"] = record.status.value
    data["created_at"] = record.created_at.isoformat()
    data["updated_at"] = record.updated_at.isoformat()
    data.pop("signature")
    return {
        "doc_id": record.doc_id,
        "status": record.status.value,
        "text_hash": record.text_hash,
        "band_keys": list(record.band_keys),
        "signature": b64(record.signature),
        "record": data,
    }


def record_from_source(source: dict[str, Any]) -> DocumentRecord:
    """The ledger row of an indexed document."""
    data = dict(source["record"])
    data["status"] = DocStatus(data["status"])
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    data["updated_at"] = datetime.fromisoformat(data["updated_at"])
    return DocumentRecord(**data, signature=unb64(source.get("signature")))


def dedup_candidates_query(text_hash: str | None, band_keys: Sequence[str]) -> dict | None:
    """Indexed documents sharing the text hash or a band key; None when there is nothing to
    match."""
    should: list[dict[str, Any]] = []
    if text_hash:
        should.append({"term": {"text_hash": text_hash}})
    if band_keys:
        should.append({"terms": {"band_keys": list(band_keys)}})
    if not should:
        return None
    return {
        "bool": {
            "filter": [{"term": {"status": DocStatus.INDEXED.value}}],
            "should": should,
            "minimum_should_match": 1,
        }
    }
