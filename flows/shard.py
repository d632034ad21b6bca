"""Sharded ingestion: the ``ingest`` flow splits its sources into shards and runs each as one
run of the ``ingest-shard`` deployment, so parsing, chunking and embedding scale with the
workers (process pool locally, pods of the Kubernetes CPU pool in production).

A shard is a rule, not a list: every shard run lists the same sources and keeps its part (by a
hash of the document id, or by a range of sorted URIs; ``prefix`` cuts ranges only between
folders / S3 key prefixes), so parameters stay small for any corpus size. At most
``shard.parallelism`` shard runs are active at once, each with one idempotency key per shard,
parent run and attempt. A shard run that fails, crashes or overruns ``shard.timeout_s`` is
cancelled and started again, up to ``shard.attempts`` runs; then every document of the shard
that was not finished is dead-lettered as ``shard_failed`` (replayable), never dropped. Claims
keep a retried shard from redoing a document another run still works on. The parent adds the
shard reports into its own summary artifact."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid4

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.states import Cancelling
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from blocks import load_settings
from flows.batches import PREPARE_AHEAD, process_documents, redo_dependents
from genai_ingest.config import Settings
from genai_ingest.failures.dlq import Failure
from genai_ingest.failures.errors import ShardFailed
from genai_ingest.models import SourceRef, utcnow
from genai_ingest.run.commit import record_failure
from genai_ingest.run.prepare import Failed
from genai_ingest.run.runtime import runtime_for
from genai_ingest.run.summary import RunSummary
from tasks.ingest import discover_sources

POLL_S = 2.0
_FAILED = {StateType.FAILED, StateType.CRASHED, StateType.CANCELLED, StateType.CANCELLING}


class ShardSpec(BaseModel):
    """Which documents of the sources one shard takes."""

    index: int
    count: int
    by: Literal["hash", "range", "prefix"] = "hash"
    start: str | None = None  # range/prefix: first URI of the shard (inclusive)
    end: str | None = None  # range/prefix: first URI of the next shard (exclusive)

    def contains(self, ref: SourceRef) -> bool:
        if self.by == "hash":
            return int(ref.doc_id[:8], 16) % self.count == self.index
        return (self.start is None or ref.uri >= self.start) and (
            self.end is None or ref.uri < self.end
        )


def _folder(uri: str) -> str:
    return uri.rsplit("/", 1)[0]


def plan_shards(refs: Sequence[SourceRef], count: int, by: str) -> list[ShardSpec]:
    """``count`` shards over ``refs``: by hash, or as contiguous ranges of sorted URIs of about
    equal size (``prefix``: each cut moved forward to the next folder boundary, so no folder
    is split; fewer shards when there are fewer folders)."""
    if by == "hash":
        return [ShardSpec(index=i, count=count, by="hash") for i in range(count)]
    uris = sorted(r.uri for r in refs)
    cuts: list[int] = []
    for n in range(1, count):
        cut = n * len(uris) // count
        if by == "prefix":
            while 0 < cut < len(uris) and _folder(uris[cut]) == _folder(uris[cut - 1]):
                cut += 1
        if 0 < cut < len(uris) and (not cuts or cut > cuts[-1]):
            cuts.append(cut)
    bounds: list[str | None] = [None, *(uris[c] for c in cuts), None]
    total = len(bounds) - 1
    return [
        ShardSpec(index=i, count=total, by=by, start=bounds[i], end=bounds[i + 1])  # type: ignore[arg-type]
        for i in range(total)
    ]


# --- the shard flow (one per shard, on a worker of the pool) ---------------------------------


@flow(
    name="ingest-shard",
    persist_result=True,
    task_runner=ThreadPoolTaskRunner(max_workers=PREPARE_AHEAD),
)
def ingest_shard(
    sources: list[str],
    shard: ShardSpec,
    settings: Settings | None = None,
    settings_block: str | None = None,
) -> dict[str, Any]:
    """Ingest one shard of ``sources``; returns its run report (the parent adds them up).

    Args:
        sources: the parent run's source specs (every shard lists them and keeps its part).
        shard: which part: hash bucket or URI range.
        settings: pipeline settings; default: environment variables.
        settings_block: name of a genai-ingest Settings block (replaces ``settings``).
    """
    settings = load_settings(settings_block) if settings_block else settings or Settings()
    rt = runtime_for(settings)
    rt.drain_spool()
    summary = RunSummary()
    refs = [r for r in discover_sources(specs=sources, settings=settings) if shard.contains(r)]
    summary.add("documents_seen", len(refs))
    changed = process_documents(refs, settings, summary)
    redo_dependents(changed, settings, summary)
    get_run_logger().info("shard %d/%d: %s", shard.index + 1, shard.count, summary.counts)
    return summary.to_json()


# --- the parent: start, watch, retry, add up ----------------------------------------------------


@dataclass
class ShardRun:
    spec: ShardSpec
    attempt: int = 0
    flow_run_id: UUID | None = None
    deadline: float = 0.0
    state: str = "pending"
    report: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "shard": self.spec.index,
            "state": self.state,
            "attempts": self.attempt,
            "flow_run_id": str(self.flow_run_id),
            "documents": self.report.get("documents_seen", ""),
        }


def run_shards(
    sources: list[str],
    refs: Sequence[SourceRef],
    settings: Settings,
    settings_block: str | None,
    summary: RunSummary,
) -> list[dict[str, Any]]:
    """Run every shard through ``settings.shard.deployment``; adds their reports (and the
    dead-lettered documents of shards that failed every attempt) to ``summary``."""
    started = utcnow()
    parameters = _shard_parameters(sources, settings, settings_block)
    specs = plan_shards(refs, settings.shard.count, settings.shard.by)
    runs = [ShardRun(spec) for spec in specs]
    queue, active = deque(runs), list[ShardRun]()
    parent = flow_run.get_id() or uuid4().hex
    with get_client(sync_client=True) as client:
        while queue or active:
            while queue and len(active) < settings.shard.parallelism:
                active.append(_submit(queue.popleft(), parameters, settings, parent))
            for run in _settled(active, client, settings, parameters, parent):
                if run.state == "completed":
                    summary.merge(run.report)
                else:
                    _report_unfinished(run, refs, started, settings, summary)
            if active:
                time.sleep(POLL_S)
    rows = [run.row() for run in runs]
    create_table_artifact(
        key="ingest-shards", table=rows, description="shard runs of this sharded ingest"
    )
    return rows


def _shard_parameters(
    sources: list[str], settings: Settings, settings_block: str | None
) -> dict[str, Any]:
    """Parameters every shard run gets. Secrets never travel as parameters: with secrets in
    the settings, shards read them from the settings block."""
    if settings_block:
        return {"sources": sources, "settings_block": settings_block}
    dumped = settings.model_dump(mode="json")
    if "**********" in str(dumped):
        raise ValueError("sharded runs with secrets in the settings need a settings block")
    return {"sources": sources, "settings": dumped}


def _submit(run: ShardRun, parameters: dict[str, Any], settings: Settings, parent: str) -> ShardRun:
    assert settings.shard.deployment is not None
    run.attempt += 1
    spec = run.spec
    started = run_deployment(
        name=settings.shard.deployment,
        parameters={**parameters, "shard": spec.model_dump()},
        timeout=0,
        idempotency_key=f"{parent}:shard-{spec.index}-of-{spec.count}:a{run.attempt}",
        flow_run_name=f"shard-{spec.index + 1}-of-{spec.count}-a{run.attempt}",
        as_subflow=True,
    )
    run.flow_run_id, run.state = started.id, "running"
    run.deadline = time.monotonic() + settings.shard.timeout_s
    return run


def _settled(
    active: list[ShardRun],
    client: SyncPrefectClient,
    settings: Settings,
    parameters: dict[str, Any],
    parent: str,
) -> list[ShardRun]:
    """Shard runs that completed or failed their last attempt (removed from ``active``);
    a failed or overdue run with attempts left is cancelled and started again."""
    settled = []
    for run in list(active):
        assert run.flow_run_id is not None
        state = client.read_flow_run(run.flow_run_id).state
        state_type = state.type if state else StateType.SCHEDULED
        if state_type is StateType.COMPLETED:
            run.report, run.state = state.result(), "completed"  # type: ignore[union-attr]
        elif state_type in _FAILED or time.monotonic() > run.deadline:
            if state_type not in _FAILED:
                client.set_flow_run_state(run.flow_run_id, Cancelling(), force=True)
            reason = state_type.value.lower() if state_type in _FAILED else "timed out"
            get_run_logger().warning("shard %d run %d %s", run.spec.index, run.attempt, reason)
            if run.attempt < settings.shard.attempts:
                _submit(run, parameters, settings, parent)
                continue
            run.state = f"failed ({reason})"
        else:
            continue
        active.remove(run)
        settled.append(run)
    return settled


def _report_unfinished(
    run: ShardRun,
    refs: Sequence[SourceRef],
    started: datetime,
    settings: Settings,
    summary: RunSummary,
) -> None:
    """Dead-letter every document of a failed shard that no run finished since ``started``."""
    rt = runtime_for(settings)
    error = ShardFailed(
        f"shard {run.spec.index + 1} of {run.spec.count} {run.state} after {run.attempt} runs"
    )
    for ref in refs:
        if not run.spec.contains(ref):
            continue
        record = rt.store.get_document(ref.doc_id)
        if record is not None and record.updated_at >= started:
            continue
        failure = Failure.from_error(error, doc_id=ref.doc_id, source=ref.uri)
        record_failure(Failed(failure, None), rt, summary)
