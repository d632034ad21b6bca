"""The ``ingest`` flow: sources → prepare (parallel, ahead) → dedup → embed → commit, in order.

Preparing batch *n+1* overlaps embedding batch *n*. Failures go to the DLQ and the run goes on;
the run publishes a summary artifact and emits an event when it dead-lettered documents."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

import genai_ingest.sources.s3  # noqa: F401  (registers s3:// sources)
from flows.batches import PREPARE_AHEAD, process_documents, redo_dependents
from flows.reporting import alert_on_failure, publish_run_report
from genai_ingest.config import Settings
from genai_ingest.run import progress
from genai_ingest.run.commit import missing_documents
from genai_ingest.run.redelivery import outage_failures, wait_for_store
from genai_ingest.run.runtime import runtime_for
from genai_ingest.run.summary import COUNTERS, RunSummary
from genai_ingest.sources.discovery import source_roots
from tasks.ingest import discover_sources, remove_documents


@flow(
    name="ingest",
    task_runner=ThreadPoolTaskRunner(max_workers=PREPARE_AHEAD),
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
def ingest(
    sources: list[str],
    settings: Settings | None = None,
    delete_missing: bool = False,
    settings_block: str | None = None,
) -> dict[str, Any]:
    """Ingest every document under ``sources`` (paths, URLs, s3:// prefixes) into the index.

    Unchanged documents are skipped; changed ones replace their chunks; with
    ``delete_missing``, documents gone from the sources are removed from the index. Documents
    another run holds are left to it (claims); with ``shard.deployment`` set, the sources are
    split into shards run by that deployment (``flows/shard.py``).

    Args:
        sources: files, folders, http(s) URLs or s3://bucket/prefix specs.
        settings: pipeline settings; default: environment variables.
        delete_missing: remove indexed documents that the sources no longer list.
        settings_block: name of a genai-ingest Settings block (replaces ``settings``).
    """
    if settings_block:
        from blocks import load_settings  # prefect-aws: imported only for a block

        settings = load_settings(settings_block)
    settings = settings or Settings()
    rt = runtime_for(settings)  # checks the index identity; the model loads when needed
    rt.drain_spool()
    summary = RunSummary()
    refs = discover_sources(specs=sources, settings=settings)
    summary.add("documents_seen", len(refs))
    progress.report("total", len(refs))
    shards: list[dict[str, Any]] = []
    if settings.shard.deployment:  # each shard on a worker of the pool (flows/shard.py)
        from flows.shard import run_shards

        shards = run_shards(sources, refs, settings, settings_block, summary)
        changed: set[str] = set()
    else:
        changed = process_documents(refs, settings, summary)
    gone: list[str] = []
    if delete_missing:
        gone = missing_documents(source_roots(sources), {r.uri for r in refs}, rt)
        remove_documents(gone, settings, summary)
    redo_dependents(changed | set(gone), settings, summary)
    replayed = replay_outage_failures(summary, settings)
    report = {
        **summary.to_json(),
        **({"replayed_after_run": replayed} if replayed else {}),
        "dlq_open": len(rt.dlq.entries()),
        "retries": rt.retry_stats.summary(),
        **({"shards": shards} if shards else {}),
    }
    publish_run_report(report, settings)
    get_run_logger().info("ingest finished: %s", {k: report[k] for k in COUNTERS})
    return report


def replay_outage_failures(summary: RunSummary, settings: Settings) -> dict[str, Any] | None:
    """Replay, once, the documents this run dead-lettered because of an outage (a delayed
    retry: ``policies.delayed_replay``), after waiting for the store to answer; the
    ``dlq-replay`` deployment's schedule takes what is still open."""
    policy = settings.policies.delayed_replay
    doc_ids = outage_failures(summary.failures, policy)
    if not doc_ids:
        return None
    logger = get_run_logger()
    if not wait_for_store(runtime_for(settings), policy.wait_s):
        logger.warning("store still down after %.0f s: %d left open", policy.wait_s, len(doc_ids))
        return {"replayed": 0, "resolved": 0, "left_open": len(doc_ids)}
    from flows.dlq_replay import dlq_replay  # a subflow

    result = dlq_replay(entry_ids=doc_ids, settings=settings)
    logger.info("replayed %d outage failures after the run", result["replayed"])
    return {
        "replayed": result["replayed"],
        "resolved": len(result["resolved"]),
        "left_open": len(doc_ids) - len(result["resolved"]),
    }
