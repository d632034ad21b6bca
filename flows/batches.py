"""The per-batch work of every flow that ingests (``ingest``, ``ingest_shard``, ``dlq_replay``):
prepare (parallel, ahead) → dedup → embed → commit, batch by batch, in order.

Preparing batch *n+1* overlaps embedding batch *n*. Failures go to the DLQ and the run goes on.
Documents other workers hold are waited for; documents displaced or depending on changed ones
are redone."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture

from flows.fanout import embed_task
from genai_ingest.config import Settings
from genai_ingest.failures.errors import Stage
from genai_ingest.models import DocumentRecord, RawDocument, SourceRef
from genai_ingest.run import progress
from genai_ingest.run.batch import deduplicate, failure_for_batch, from_cache
from genai_ingest.run.commit import dependents_of
from genai_ingest.run.prepare import (
    Failed,
    Held,
    Outcome,
    Overrides,
    Prepared,
    StageFailure,
    Unchanged,
    store_read,
)
from genai_ingest.run.runtime import runtime_for
from genai_ingest.run.summary import RunSummary
from tasks.ingest import (
    commit_documents,
    dead_letter,
    prepare_documents,
)

PREPARE_AHEAD = 2


def process_documents(
    refs: Sequence[SourceRef | RawDocument],
    settings: Settings,
    summary: RunSummary,
    overrides: dict[str, Overrides] | None = None,
) -> set[str]:
    """Run refs through the stages in batches; returns the ids of documents whose chunks
    changed. Documents another live worker holds are waited for (``wait_for_held``);
    documents a copy ranked before them displaced are redone (``redo_displaced``)."""
    held: list[SourceRef | RawDocument] = []
    displaced: set[str] = set()
    changed = _process_batches(refs, settings, summary, overrides, held, displaced)
    if held:
        changed |= wait_for_held(held, settings, summary, overrides)
    if displaced:
        changed |= redo_displaced(displaced, settings, summary)
    return changed


def _process_batches(
    refs: Sequence[SourceRef | RawDocument],
    settings: Settings,
    summary: RunSummary,
    overrides: dict[str, Overrides] | None,
    held: list[SourceRef | RawDocument],
    displaced: set[str],
) -> set[str]:
    from genai_ingest.parse.isolation import parser_pool_lease  # the parsers: only when parsing

    size = settings.documents_per_batch
    by_id = {item.doc_id: item for item in refs}
    batches = (refs[i : i + size] for i in range(0, len(refs), size))
    ahead: deque[PrefectFuture[list[Outcome]]] = deque()

    def submit_next() -> None:
        batch = next(batches, None)
        if batch is not None:
            ahead.append(prepare_documents.submit(batch, settings, summary, overrides))

    changed: set[str] = set()
    with contextlib.ExitStack() as parsing:  # parser workers: one per batch in flight, then none
        parsing.enter_context(parser_pool_lease(min(PREPARE_AHEAD, -(-len(refs) // size))))
        for _ in range(PREPARE_AHEAD):
            submit_next()
        while ahead:
            outcomes = ahead.popleft().result()
            submit_next()
            if not ahead:
                parsing.close()  # the last batch is parsed: the workers go before it is embedded
            changed |= finish_batch(outcomes, settings, summary, displaced)
            held += [by_id[o.ref.doc_id] for o in outcomes if isinstance(o, Held)]
            progress.report("done", len(outcomes))
    return changed


def wait_for_held(
    items: Sequence[SourceRef | RawDocument],
    settings: Settings,
    summary: RunSummary,
    overrides: dict[str, Overrides] | None = None,
) -> set[str]:
    """Re-check documents that other workers held: released ones were finished there
    (``documents_skipped_claimed``) unless this run must redo them (forced: a re-point, a
    dependent, a replay), expired ones (their worker died) are taken over; live ones are
    waited for, up to ``policies.claims.wait_s``."""
    rt = runtime_for(settings)
    policy = settings.policies.claims
    deadline = time.monotonic() + policy.wait_s
    pending, changed = list(items), set()
    while pending:
        time.sleep(policy.poll_s)
        now = time.time()
        state = {item.doc_id: rt.claims.state_of(item.doc_id, now) for item in pending}
        forced = {i.doc_id for i in pending if (overrides or {}).get(i.doc_id, Overrides()).force}
        free = [item for item in pending if state[item.doc_id] == "free"]
        summary.add("documents_skipped_claimed", sum(i.doc_id not in forced for i in free))
        expired = [item for item in pending if state[item.doc_id] == "expired"]
        expired += [item for item in free if item.doc_id in forced]
        pending = [item for item in pending if state[item.doc_id] == "live"]
        if expired:
            get_run_logger().info("taking over %d documents of a stopped worker", len(expired))
            changed |= process_documents(expired, settings, summary, overrides)
        if pending and time.monotonic() > deadline:
            get_run_logger().warning(
                "%d documents still held by other workers after %.0f s; left to them",
                len(pending),
                policy.wait_s,
            )
            summary.add("documents_skipped_claimed", len(pending))
            break
    return changed


def finish_batch(
    outcomes: Sequence[Outcome],
    settings: Settings,
    summary: RunSummary,
    displaced: set[str] | None = None,
) -> set[str]:
    """Dedup, embed and commit the prepared documents of one batch; dead-letter the rest.
    Adds to ``displaced`` the documents to redo because a copy ranked before them was
    committed."""
    rt = runtime_for(settings)
    failed = [o for o in outcomes if isinstance(o, Failed)]
    docs = [o for o in outcomes if isinstance(o, Prepared)]
    summary.add("documents_unchanged", sum(isinstance(o, Unchanged) for o in outcomes))
    docs, dedup_failed = deduplicate(docs, rt, summary)
    failed += dedup_failed
    retry = settings.policies.task.task_options()
    committed: list[Prepared] = []
    if docs:
        state = embed_task(settings).with_options(**retry)(
            docs, settings, summary, return_state=True
        )
        embedded = (
            state.result()
            if state.is_completed()
            else from_cache(docs, rt, {}, missing=_error(state))
        )
        failed += embedded.failed
        if embedded.docs:
            state = commit_documents.with_options(**retry)(
                embedded.docs, embedded.chunks, settings, summary, return_state=True
            )
            if state.is_completed():
                committed = embedded.docs
                if displaced is not None:
                    displaced |= state.result()
            else:
                failed += failure_for_batch(embedded.docs, _error(state), Stage.STORE)
    if failed:
        dead_letter(failed, settings, summary)
    return {d.doc_id for d in committed if d.previous is not None}


def _error(state: Any) -> BaseException:
    error = state.result(raise_on_failure=False)
    return error if isinstance(error, BaseException) else RuntimeError(str(state.message))


def redo_dependents(changed: set[str], settings: Settings, summary: RunSummary) -> None:
    """Re-process documents whose duplicate decisions pointed at changed or removed ones."""
    dependents = dependents_of(changed, runtime_for(settings))
    if dependents:
        redo(dependents, settings, summary)


def redo_displaced(doc_ids: set[str], settings: Settings, summary: RunSummary) -> set[str]:
    """Redo the documents that a copy ranked before them displaced (they become its
    duplicates, or drop the chunks it holds). Those whose ledger rows cannot be read now keep
    their ``displaced_by`` mark: the next run redoes them."""
    rt = runtime_for(settings)
    try:
        records = [
            r
            for r in (
                store_read(rt, summary, lambda i=i: rt.store.get_document(i))
                for i in sorted(doc_ids)
            )
            if r is not None and r.metadata.get("displaced_by")
        ]
    except StageFailure as failure:
        get_run_logger().warning("re-pointing left to the next run: %s", failure.error.reason)
        return set()
    summary.add("documents_repointed", len(records))
    return redo(records, settings, summary) if records else set()


def redo(records: Sequence[DocumentRecord], settings: Settings, summary: RunSummary) -> set[str]:
    """Re-process ledger documents from their sources, forced."""
    refs = [SourceRef(uri=r.source, name=r.metadata.get("name", "")) for r in records]
    forced = {r.doc_id: Overrides(force=True) for r in records}
    return process_documents(refs, settings, summary, forced)
