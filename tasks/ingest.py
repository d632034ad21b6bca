"""Prefect tasks: batch-level wrappers around the plain pipeline stages.

Never one task per chunk: a task prepares a batch of documents, embeds a batch, or commits a
batch. Embedding and store writes retry transient errors (``Settings.policies.task``)."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from genai_ingest.config import Settings
from genai_ingest.models import EmbeddedChunk, RawDocument, SourceRef
from genai_ingest.run.batch import Embedded, embed_batch
from genai_ingest.run.commit import commit, delete_document, record_failure, resolve_dead_letters
from genai_ingest.run.prepare import Failed, Outcome, Overrides, Prepared, prepare
from genai_ingest.run.runtime import runtime_for
from genai_ingest.run.summary import RunSummary
from genai_ingest.sources.discovery import discover

_TASK_DEFAULTS = {"cache_policy": NO_CACHE, "persist_result": False}


@task(name="discover-sources", **_TASK_DEFAULTS)
def discover_sources(specs: Sequence[str], settings: Settings) -> list[SourceRef]:
    """List every document under the source specs, sorted."""
    return discover(specs, settings.sources)


@task(name="prepare-documents", **_TASK_DEFAULTS)
def prepare_documents(
    items: Sequence[SourceRef | RawDocument],
    settings: Settings,
    summary: RunSummary,
    overrides: dict[str, Overrides] | None = None,
) -> list[Outcome]:
    """Fetch (unless the bytes are given), parse, clean, validate and chunk a batch;
    failures come back as outcomes."""
    rt = runtime_for(settings)
    overrides = overrides or {}
    return [
        prepare(
            item.ref if isinstance(item, RawDocument) else item,
            rt,
            summary,
            overrides.get(item.doc_id),
            raw=item if isinstance(item, RawDocument) else None,
        )
        for item in items
    ]


@task(name="embed-documents", **_TASK_DEFAULTS)
def embed_documents(docs: Sequence[Prepared], settings: Settings, summary: RunSummary) -> Embedded:
    """Embed every kept chunk of the batch in one pass (cache first); retried when an
    endpoint fails transiently (vectors already computed stay cached)."""
    return embed_batch(docs, runtime_for(settings), summary)


@task(name="commit-documents", **_TASK_DEFAULTS)
def commit_documents(
    docs: Sequence[Prepared],
    chunks: Sequence[Sequence[EmbeddedChunk]],
    settings: Settings,
    summary: RunSummary,
) -> set[str]:
    """Write chunks, delete stale ones, write ledger rows last; safe to repeat. Returns the
    documents to redo because a copy ranked before them was committed (``commit.commit``)."""
    rt = runtime_for(settings)
    redo: set[str] = set()
    for doc, doc_chunks in zip(docs, chunks, strict=True):
        redo |= commit(doc, doc_chunks, rt, summary)
    resolve_dead_letters(docs, rt)
    return redo


@task(name="dead-letter", **_TASK_DEFAULTS)
def dead_letter(failed: Sequence[Failed], settings: Settings, summary: RunSummary) -> None:
    """Record failures in the DLQ with their raw bytes."""
    rt = runtime_for(settings)
    for item in failed:
        record_failure(item, rt, summary)


@task(name="remove-documents", **_TASK_DEFAULTS)
def remove_documents(doc_ids: Sequence[str], settings: Settings, summary: RunSummary) -> None:
    """Delete documents (chunks first, ledger last)."""
    rt = runtime_for(settings)
    for doc_id in doc_ids:
        delete_document(doc_id, rt, summary)
