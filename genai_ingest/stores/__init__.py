"""Vector stores and DLQs, chosen by configuration."""

from __future__ import annotations

from genai_ingest.config import Settings
from genai_ingest.failures.dlq import DeadLetterQueue
from genai_ingest.stores.base import DocumentClaims, VectorStore


def _uses_elasticsearch(settings: Settings) -> bool:
    return bool(settings.store_url and settings.store_url.startswith(("http://", "https://")))


def open_store(settings: Settings) -> VectorStore:
    """The embedded SQLite store (its live generation: ``sqlite_generations``), or
    Elasticsearch when ``store_url`` is an http(s) URL."""
    if _uses_elasticsearch(settings):
        from genai_ingest.stores.elasticsearch import ElasticsearchVectorStore

        return ElasticsearchVectorStore.from_settings(settings)
    from genai_ingest.stores.sqlite_generations import SQLiteGenerationStore

    return SQLiteGenerationStore(settings.database_path, settings.sqlite_busy_timeout_s)


def open_dlq(settings: Settings) -> DeadLetterQueue:
    """The DLQ: ``dlq_url`` (``s3://bucket/folder`` or a local folder) when set; else an
    Elasticsearch index with ``elasticsearch.dlq_in_elasticsearch`` and an http(s)
    ``store_url``; else embedded (same SQLite file as the store)."""
    if settings.dlq_url:
        from genai_ingest.stores.folder_dlq import open_dlq_url

        return open_dlq_url(settings.dlq_url)
    if settings.elasticsearch.dlq_in_elasticsearch and _uses_elasticsearch(settings):
        from genai_ingest.stores.elasticsearch import ElasticsearchDeadLetterQueue

        return ElasticsearchDeadLetterQueue.from_settings(settings)
    from genai_ingest.stores.sqlite_dlq import SQLiteDeadLetterQueue

    return SQLiteDeadLetterQueue(settings.database_path, settings.sqlite_busy_timeout_s)


def open_claims(settings: Settings, store: VectorStore) -> DocumentClaims:
    """Document claims beside the ledger: ``{alias}-claims`` on Elasticsearch, a table of the
    SQLite file otherwise."""
    if _uses_elasticsearch(settings):
        from genai_ingest.stores.es_claims import ElasticsearchClaims

        return ElasticsearchClaims(store.client, settings.elasticsearch.index)  # type: ignore[attr-defined]
    from genai_ingest.stores.sqlite_dlq import SQLiteClaims

    return SQLiteClaims(settings.database_path, settings.sqlite_busy_timeout_s)
