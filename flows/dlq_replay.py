"""The ``dlq_replay`` flow: re-run dead-lettered documents from their source, or from the raw
bytes kept in the DLQ when the source is gone. Idempotent: a success resolves the entry (its
history is kept) and a second replay finds nothing open to do. The ``dlq-replay`` deployment
runs it on a schedule for transient entries (``error_kind="transient"``, up to
``max_attempts``), so documents an outage dead-lettered come back by themselves."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.blocks.system import Secret
from pydantic import SecretStr

from flows.batches import process_documents
from flows.reporting import alert_on_failure, publish_run_report
from genai_ingest.config import Settings
from genai_ingest.failures.dlq import DeadLetter, EntryStatus
from genai_ingest.failures.errors import IngestError
from genai_ingest.failures.redact import register_secret
from genai_ingest.models import RawDocument, SourceRef
from genai_ingest.run.prepare import Overrides
from genai_ingest.run.runtime import Runtime, runtime_for
from genai_ingest.run.summary import RunSummary
from genai_ingest.sources.discovery import fetch


@flow(name="dlq_replay", on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def dlq_replay(
    entry_ids: list[str] | None = None,
    stage: str | None = None,
    error_class: str | None = None,
    settings: Settings | None = None,
    password: SecretStr | None = None,
    password_secret_block: str | None = None,
    skip_language_check: bool = False,
    settings_block: str | None = None,
    error_kind: str | None = None,
    max_attempts: int | None = None,
) -> dict[str, Any]:
    """Replay open DLQ entries: the given ids, or all open entries matching stage, error
    class and error kind (e.g. ``transient``), leaving those that failed ``max_attempts``
    times already to an operator.

    ``password`` (or the name of a Prefect Secret block holding it) opens encrypted files;
    ``settings_block`` names a genai-ingest Settings block (replaces ``settings``)."""
    if settings_block:
        from blocks import load_settings  # prefect-aws: imported only for a block

        settings = load_settings(settings_block)
    settings = settings or Settings()
    rt = runtime_for(settings)
    rt.drain_spool()
    secret = _password(password, password_secret_block)
    entries = [
        e
        for e in select_entries(rt.dlq, entry_ids, stage, error_class)
        if (error_kind is None or e.error_kind == error_kind)
        and (max_attempts is None or e.attempts < max_attempts)
    ]
    summary = RunSummary()
    summary.add("documents_seen", len(entries))
    items = [_replay_item(entry, rt) for entry in entries]
    overrides = {
        e.doc_id: Overrides(
            password=secret,
            metadata=dict(e.overrides.get("metadata", {})),
            skip_language_check=skip_language_check
            or e.overrides.get("skip_language_check", False),
            unsafe_content=e.overrides.get("unsafe_content"),
            force=True,
        )
        for e in entries
    }
    process_documents(items, settings, summary, overrides)
    resolved = [e.entry_id for e in entries if _is_resolved(rt, e.entry_id)]
    report = {**summary.to_json(), "replayed": len(entries), "resolved": resolved}
    publish_run_report(report, settings)
    get_run_logger().info("replayed %d, resolved %d", len(entries), len(resolved))
    return report


def select_entries(
    dlq: Any, entry_ids: list[str] | None, stage: str | None, error_class: str | None
) -> list[DeadLetter]:
    """Open entries by id, or by filter."""
    open_entries = dlq.entries(status=EntryStatus.OPEN, stage=stage, error_class=error_class)
    if entry_ids:
        wanted = set(entry_ids)
        return [e for e in open_entries if e.entry_id in wanted]
    return open_entries


def _password(password: SecretStr | None, block_name: str | None) -> str | None:
    value = password.get_secret_value() if password else None
    if block_name:
        value = Secret.load(block_name).get()
    register_secret(value)
    return value


def _replay_item(entry: DeadLetter, rt: Runtime) -> SourceRef | RawDocument:
    """Fetch from the source when it is still there, else use the DLQ's raw bytes."""
    ref = SourceRef(uri=entry.source, name=entry.source.rsplit("/", 1)[-1])
    settings = rt.settings
    try:
        return fetch(ref, settings.sources, settings.policies.download)
    except IngestError:
        raw = rt.dlq.raw(entry.entry_id)
        return RawDocument(ref=ref, data=raw) if raw is not None else ref


def _is_resolved(rt: Runtime, entry_id: str) -> bool:
    entry = rt.dlq.get(entry_id)
    return entry is not None and entry.status is EntryStatus.RESOLVED
