"""``genai-ingest reindex``: build the next index generation from the stored chunks, swap it in
behind a retrieval-quality gate, roll back, drop the previous generation
(``genai_ingest.reindex``). Registered on the main app by ``genai_ingest.cli.app``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from genai_ingest.cli.common import (
    ConfigFile,
    DataDir,
    JsonOut,
    SettingsBlock,
    StoreUrl,
    block_api,
    build_settings,
    cli_errors,
    console,
    emit,
    progress_bar,
    quiet_prefect,
)

#: Exit status of a swap the gate refused (as ``eval --min-passage-at-k``).
GATE_REFUSED_EXIT = 4


def reindex(
    model: Annotated[
        str | None,
        typer.Option("--model", help="embed with this model (default: embed.model)"),
    ] = None,
    qa: Annotated[
        Path | None,
        typer.Option("--qa", help="QA file the swap gate evaluates", exists=True, dir_okay=False),
    ] = None,
    min_passage_at_k: Annotated[
        float | None,
        typer.Option(help="refuse the swap below this passage@k of the new generation (0-1)"),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="hits per QA question")] = 5,
    swap: Annotated[
        bool, typer.Option("--swap", help="finish the build, run the gate, make it live")
    ] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="make the previous generation live again")
    ] = False,
    drop_previous: Annotated[
        bool, typer.Option("--drop-previous", help="delete the generations older than the live")
    ] = False,
    data_dir: DataDir = None,
    store: StoreUrl = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
    settings_block: SettingsBlock = None,
) -> None:
    """Rebuild the index for a new model, encoder or schema from the chunks already stored
    (no document parsed), while searches keep reading the live generation. Alone: build or
    resume the next generation. --swap: then make it live if its passage@k on --qa reaches
    --min-passage-at-k (exit 4 if not). --rollback, --drop-previous: see their help."""
    if sum((swap, rollback, drop_previous)) > 1:
        raise typer.BadParameter("give at most one of --swap, --rollback, --drop-previous")
    if swap and (qa is None or min_passage_at_k is None):
        raise typer.BadParameter("--swap needs --qa FILE and --min-passage-at-k X")
    if (rollback or drop_previous) and model:
        raise typer.BadParameter("--model builds a generation; --rollback/--drop-previous do not")
    quiet_prefect()
    with cli_errors(), block_api(settings_block, config):
        from genai_ingest import reindex as rebuild

        settings = build_settings(data_dir, store, config, settings_block=settings_block)
        if rollback:
            report = rebuild.rollback(settings)
        elif drop_previous:
            report = rebuild.drop_previous(settings)
        else:
            with progress_bar(not as_json and sys.stderr.isatty(), "re-embedding"):
                try:
                    report = (
                        rebuild.swap(settings, qa, min_passage_at_k, model, k)
                        if swap
                        else rebuild.build_next(settings, model)
                    )
                except rebuild.GateRefused as refused:
                    _show(refused.report.as_dict(), as_json)
                    console.print(f"[red]swap refused[/red]: {refused.report.refused}")
                    raise typer.Exit(GATE_REFUSED_EXIT) from None
    _show(report.as_dict(), as_json)


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(data)
        return
    gate = data.pop("gate")
    for key, value in data.items():
        if value not in (None, [], 0) or key in ("documents_parsed", "swapped"):
            Console().print(f"{key}: {value}")
    if gate:
        for side in ("live", "new"):
            figures = gate[side]
            Console().print(
                f"gate {side} {figures['generation']}: passage@{gate['k']} "
                f"{figures['passage_at_k']:.3f}, doc@{gate['k']} {figures['doc_at_k']:.3f}, "
                f"MRR {figures['mrr']:.3f} ({figures['questions']} questions)"
            )
