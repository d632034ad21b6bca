"""``genai-ingest``: run ingestion, search the index, evaluate retrieval, inspect stats; the
``search`` and ``eval`` commands live in ``cli.search``, ``reindex`` in ``cli.reindex``, the
``dlq`` and ``server`` command groups in ``cli.dlq`` and ``cli.server``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from genai_ingest.cli.common import (
    DEFAULT_API_KEY_ENV,
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
    flow_api,
    preflight,
    progress_bar,
    quiet_prefect,
)
from genai_ingest.cli.dlq import dlq_app
from genai_ingest.cli.reindex import reindex
from genai_ingest.cli.search import evaluate_retrieval, search
from genai_ingest.cli.server import server_app
from genai_ingest.failures.dlq import EntryStatus

app = typer.Typer(
    help="Fault-tolerant, idempotent document ingestion for RAG.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(server_app, name="server")


@app.command()
def run(
    sources: Annotated[
        list[str], typer.Argument(help="files, folders, http(s) URLs, s3:// prefixes")
    ],
    data_dir: DataDir = None,
    store: StoreUrl = None,
    config: ConfigFile = None,
    embedder: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible embeddings endpoint URL, e.g. http://host:8000/v1"),
    ] = None,
    embedder_model: Annotated[str | None, typer.Option(help="model name for --embedder")] = None,
    embedder_api_key_env: Annotated[
        str | None,
        typer.Option(
            help="environment variable holding the --embedder API key, for endpoints that ask"
            f" for one [default: {DEFAULT_API_KEY_ENV} when set; else no key]"
        ),
    ] = None,
    delete_missing: Annotated[
        bool, typer.Option("--delete-missing", help="remove documents gone from the sources")
    ] = False,
    fail_on_dlq: Annotated[
        bool, typer.Option("--fail-on-dlq", help="exit 3 when documents were dead-lettered")
    ] = False,
    as_json: JsonOut = False,
    settings_block: SettingsBlock = None,
) -> None:
    """Ingest documents: parse, clean, validate, chunk, dedup, embed, store."""
    quiet_prefect()
    _check_sources(sources)
    with cli_errors(), flow_api(config):
        settings = build_settings(
            data_dir, store, config, embedder, embedder_model, settings_block, embedder_api_key_env
        )
        preflight(settings)
        from flows.ingest import ingest

        with progress_bar(not as_json and sys.stderr.isatty()):
            report = ingest(sources=sources, settings=settings, delete_missing=delete_missing)
        from genai_ingest.embed.encoder_choice import export_after_run
        from genai_ingest.run.runtime import runtime_for

        rt = runtime_for(settings, writing=False)  # the run's, as it is
        built = vars(rt).get("embedder")  # set only if the run built the model
        export_after_run(settings, built)  # the model is loaded: searches need no torch from now on
    if as_json:
        emit({k: v for k, v in report.items() if k not in ("failures", "stage_seconds")})
    else:
        _print_report(report)
    if fail_on_dlq and report["dlq_open"]:
        raise typer.Exit(3)


def _check_sources(sources: list[str]) -> None:
    """Fail fast, with a clear message, on a local path that does not exist."""
    for spec in sources:
        if "://" not in spec and not Path(spec).expanduser().exists():
            console.print(f"[red]error[/red]: no such file or folder: {spec}")
            raise typer.Exit(2)


def _print_report(report: dict[str, Any]) -> None:
    table = Table(title="ingest run", show_header=False)
    for key, value in report.items():
        if key not in ("failures", "stage_seconds"):
            table.add_row(key, str(value))
    for stage, seconds in report["stage_seconds"].items():
        table.add_row(f"time: {stage}", f"{seconds:.2f} s")
    Console().print(table)
    if report["failures"]:
        failures = Table(title="dead-lettered", show_lines=False)
        for column in ("source", "stage", "error_class", "reason"):
            failures.add_column(column, overflow="fold")
        for f in report["failures"]:
            failures.add_row(
                f["source"].rsplit("/", 1)[-1], f["stage"], f["error_class"], f["reason"]
            )
        Console().print(failures)


app.command()(search)
app.command(name="eval")(evaluate_retrieval)
app.command()(reindex)


@app.command()
def stats(
    data_dir: DataDir = None,
    store: StoreUrl = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
    settings_block: SettingsBlock = None,
) -> None:
    """Documents, chunks, open DLQ entries and the digest of all chunk ids."""
    with cli_errors(), block_api(settings_block, config):
        from genai_ingest.stores import open_dlq, open_store

        settings = build_settings(data_dir, store, config, settings_block=settings_block)
        vector_store, dlq = open_store(settings), open_dlq(settings)
        st = vector_store.stats()
        data = {
            "documents": st.documents,
            "chunks": st.chunks,
            "dlq": len(dlq.entries(status=EntryStatus.OPEN)),
            "chunk_ids_sha256": st.chunk_ids_sha256,
            "model_id": st.model_id,
            "dimension": st.dimension,
        }
    if as_json:
        emit(data)
    else:
        for key, value in data.items():
            Console().print(f"{key}: {value}")
