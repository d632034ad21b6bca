"""The ``reindex`` flow: ``genai-ingest reindex`` from the Prefect UI (the ``reindex``
deployment). The work is ``genai_ingest.reindex``'s; this flow picks the action, logs the
progress and publishes the report as an artifact. A refused swap fails the run, with the
figures of both generations in its artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.reporting import alert_on_failure
from genai_ingest import reindex as rebuild
from genai_ingest.config import Settings
from genai_ingest.run import progress

Action = Literal["build", "swap", "rollback", "drop_previous"]


@flow(name="reindex", on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def reindex(
    action: Action = "build",
    model: str | None = None,
    qa_file: str | None = None,
    min_passage_at_k: float | None = None,
    k: int = 5,
    settings: Settings | None = None,
    settings_block: str | None = None,
) -> dict[str, Any]:
    """``build``: build or resume the next index generation from the stored chunks (for
    ``model``, default: the configured one); ``swap``: then make it live if its passage@k on
    ``qa_file`` reaches ``min_passage_at_k``; ``rollback``: the previous generation live
    again; ``drop_previous``: delete it. ``settings_block`` names a genai-ingest Settings
    block (replaces ``settings``)."""
    if settings_block:
        from blocks import load_settings  # prefect-aws: imported only for a block

        settings = load_settings(settings_block)
    settings = settings or Settings()
    logger = get_run_logger()
    if action == "rollback":
        report = rebuild.rollback(settings)
    elif action == "drop_previous":
        report = rebuild.drop_previous(settings)
    else:
        report = _build(action, model, qa_file, min_passage_at_k, k, settings, logger)
    _publish(report)
    logger.info("reindex %s: %s", action, report.as_dict())
    if report.refused:
        raise RuntimeError(f"swap refused: {report.refused}")
    return report.as_dict()


def _build(
    action: Action,
    model: str | None,
    qa_file: str | None,
    min_passage_at_k: float | None,
    k: int,
    settings: Settings,
    logger: Any,
) -> rebuild.ReindexReport:
    done = {"total": 0, "chunks": 0}

    def log_progress(event: str, n: int) -> None:
        done[event] = n if event == "total" else done.get(event, 0) + n
        if event == "chunks":
            logger.info("re-embedded %d of %d stored chunks", done["chunks"], done["total"])

    progress.set_listener(log_progress)
    try:
        if action == "build":
            return rebuild.build_next(settings, model)
        if qa_file is None or min_passage_at_k is None:
            raise ValueError("swap needs qa_file and min_passage_at_k")
        return rebuild.swap(settings, Path(qa_file), min_passage_at_k, model, k)
    except rebuild.GateRefused as refused:
        return refused.report
    finally:
        progress.set_listener(None)


def _publish(report: rebuild.ReindexReport) -> None:
    rows = "\n".join(f"| {key} | {value} |" for key, value in report.as_dict().items())
    create_markdown_artifact(
        key="reindex-report", markdown=f"| field | value |\n|---|---|\n{rows}", description=None
    )
