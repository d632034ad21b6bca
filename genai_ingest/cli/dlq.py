"""``genai-ingest dlq list|show|replay|discard``: inspect, replay or discard dead-lettered
documents."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from genai_ingest.cli.common import (
    ConfigFile,
    DataDir,
    JsonOut,
    SettingsBlock,
    StoreUrl,
    build_settings,
    cli_errors,
    console,
    emit,
    flow_api,
    preflight,
    quiet_prefect,
)
from genai_ingest.failures.dlq import EntryStatus

dlq_app = typer.Typer(help="Inspect, replay or discard dead-lettered documents.")


@dlq_app.command("list")
def dlq_list(
    status: Annotated[str, typer.Option(help="open, resolved, discarded or all")] = "open",
    stage: Annotated[str | None, typer.Option(help="only this stage")] = None,
    error_class: Annotated[str | None, typer.Option(help="only this error class")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """List DLQ entries."""
    with cli_errors():
        from genai_ingest.stores import open_dlq

        wanted = None if status == "all" else EntryStatus(status)
        entries = open_dlq(build_settings(data_dir, None, config)).entries(
            status=wanted, stage=stage, error_class=error_class
        )
    if as_json:
        emit([{k: v for k, v in e.to_json().items() if k != "traceback"} for e in entries])
        return
    table = Table(title=f"DLQ ({len(entries)})")
    for column in ("id", "source", "stage", "error_class", "kind", "attempts", "reason"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            e.entry_id[:12],
            e.source.rsplit("/", 1)[-1],
            e.stage,
            e.error_class,
            e.error_kind,
            str(e.attempts),
            e.reason,
        )
    Console().print(table)


@dlq_app.command("show")
def dlq_show(
    entry_id: Annotated[str, typer.Argument(help="entry id (a unique prefix is enough)")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Show one entry with its stack trace and history."""
    with cli_errors():
        from genai_ingest.stores import open_dlq

        dlq = open_dlq(build_settings(data_dir, None, config))
        entry = _find_entry(dlq, entry_id)
    if as_json:
        emit(entry.to_json())
        return
    for key, value in entry.to_json().items():
        if key not in ("traceback", "history"):
            Console().print(f"[bold]{key}[/bold]: {value}")
    Console().print("[bold]history[/bold]:")
    for attempt in entry.history:
        Console().print(f"  {attempt}")
    Console().print("[bold]traceback[/bold]:\n" + entry.traceback)


def _find_entry(dlq: Any, entry_id: str) -> Any:
    matches = [e for e in dlq.entries(status=None) if e.entry_id.startswith(entry_id)]
    if len(matches) != 1:
        raise KeyError(f"{len(matches)} DLQ entries match {entry_id!r}")
    return matches[0]


@dlq_app.command("replay")
def dlq_replay(
    entry_ids: Annotated[
        list[str] | None, typer.Argument(help="entry ids (unique prefixes)")
    ] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="every open entry")] = False,
    stage: Annotated[str | None, typer.Option(help="open entries of this stage")] = None,
    error_class: Annotated[
        str | None, typer.Option(help="open entries of this error class")
    ] = None,
    password: Annotated[
        bool, typer.Option("--password", help="prompt for the password of encrypted files")
    ] = False,
    data_dir: DataDir = None,
    store: StoreUrl = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
    settings_block: SettingsBlock = None,
) -> None:
    """Re-run dead-lettered documents (from the source, or the stored raw bytes)."""
    quiet_prefect()
    if not (entry_ids or all_entries or stage or error_class):
        console.print("[red]error[/red]: give entry ids, --all, --stage or --error-class")
        raise typer.Exit(2)
    with cli_errors(), flow_api(config):
        from pydantic import SecretStr

        from flows.dlq_replay import dlq_replay as replay_flow
        from genai_ingest.stores import open_dlq

        settings = build_settings(data_dir, store, config, settings_block=settings_block)
        preflight(settings)
        ids = None
        if entry_ids:
            dlq = open_dlq(settings)
            ids = [_find_entry(dlq, i).entry_id for i in entry_ids]
        secret = SecretStr(typer.prompt("password", hide_input=True)) if password else None
        report = replay_flow(
            entry_ids=ids, stage=stage, error_class=error_class, settings=settings, password=secret
        )
    if as_json:
        emit({k: v for k, v in report.items() if k != "stage_seconds"})
    else:
        Console().print(f"replayed {report['replayed']}, resolved {len(report['resolved'])}")


@dlq_app.command("discard")
def dlq_discard(
    entry_ids: Annotated[list[str], typer.Argument(help="entry ids (unique prefixes)")],
    reason: Annotated[str, typer.Option(help="why it is discarded")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Close entries without replaying them (the history is kept)."""
    with cli_errors():
        from genai_ingest.stores import open_dlq

        dlq = open_dlq(build_settings(data_dir, None, config))
        for entry_id in entry_ids:
            dlq.discard(_find_entry(dlq, entry_id).entry_id, reason)
    console.print(f"discarded {len(entry_ids)}")
