"""Run reports and alerts: a Prefect artifact per run, an event when documents were
dead-lettered (a Prefect automation turns it into a notification), and a failure hook."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run

from genai_ingest.config import Settings
from genai_ingest.failures.redact import redact
from genai_ingest.run.summary import COUNTERS

DLQ_EVENT = "genai-ingest.run.dead-lettered"
FAILED_EVENT = "genai-ingest.run.failed"


def _resource() -> dict[str, str]:
    run_id = flow_run.get_id() or "local"
    return {
        "prefect.resource.id": f"genai-ingest.flow-run.{run_id}",
        "prefect.resource.name": flow_run.get_name() or "ingest",
    }


def publish_run_report(report: dict[str, Any], settings: Settings) -> None:
    """Summary artifact (counts, stage timings, DLQ entries) and, if needed, the DLQ event."""
    counts = "\n".join(f"| {k} | {report[k]} |" for k in COUNTERS)
    stages = "\n".join(f"| {k} | {v:.2f} |" for k, v in report["stage_seconds"].items())
    create_markdown_artifact(
        key="ingest-summary",
        markdown=(
            "# Ingest run\n\n| counter | value |\n|---|---|\n"
            f"{counts}\n| dlq_new | {report['dlq_new']} |\n\n"
            f"## Stage time (s)\n\n| stage | seconds |\n|---|---|\n{stages}\n"
        ),
        description="genai-ingest run summary",
    )
    if report["failures"]:
        create_table_artifact(
            key="ingest-dlq",
            table=[{k: redact(str(v)) for k, v in f.items()} for f in report["failures"]],
            description="documents sent to the dead-letter queue by this run",
        )
        emit_event(
            event=DLQ_EVENT,
            resource=_resource(),
            payload={
                "dlq_new": report["dlq_new"],
                "by_error_class": _count_by(report["failures"], "error_class"),
                "data_dir": str(settings.data_dir),
            },
        )


def _count_by(rows: list[dict[str, str]], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[key]] = counts.get(row[key], 0) + 1
    return counts


def alert_on_failure(flow: Any, run: Any, state: Any) -> None:
    """Flow ``on_failure``/``on_crashed`` hook: emit an event an automation can notify on."""
    emit_event(
        event=FAILED_EVENT,
        resource=_resource(),
        payload={"state": state.type.value, "message": redact(str(state.message or ""))},
    )
