"""``genai-ingest``: run ingestion, search the index, evaluate retrieval, inspect stats; the
``dlq`` and ``server`` command groups live in ``dlq_cli`` and ``server_cli``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from genai_ingest.cli_common import (
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
    quiet_prefect,
)
from genai_ingest.dlq import EntryStatus
from genai_ingest.dlq_cli import dlq_app
from genai_ingest.server_cli import server_app

app = typer.Typer(
    help="Fault-tolerant, idempotent document ingestion for RAG.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(server_app, name="server")


@contextmanager
def progress_bar(enabled: bool) -> Iterator[None]:
    """A rich progress bar fed by the flow's progress events."""
    from genai_ingest import progress

    if not enabled:
        yield
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task_id = bar.add_task("ingesting", total=None)

        def listener(event: str, n: int) -> None:
            if event == "total":
                bar.update(task_id, total=n)
            else:
                bar.advance(task_id, n)

        progress.set_listener(listener)
        try:
            yield
        finally:
            progress.set_listener(None)


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


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="natural-language query")] = None,
    queries_file: Annotated[
        Path | None,
        typer.Option(
            "--queries-file", help="one query per line; prints one result per query", exists=True
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="hits to return")] = 5,
    doc_id: Annotated[str | None, typer.Option(help="only this document")] = None,
    language: Annotated[str | None, typer.Option(help="only this language (ISO 639-1)")] = None,
    data_dir: DataDir = None,
    store: StoreUrl = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
    settings_block: SettingsBlock = None,
) -> None:
    """kNN search over the index: one query, or every line of --queries-file (JSON: a list of
    {"query", "hits"}). Hits carry page_start, page_end and headings for citing them."""
    if (query is None) == (queries_file is None):
        raise typer.BadParameter("give a QUERY or --queries-file, not both")
    queries = [query] if query is not None else _read_queries(queries_file)
    quiet_prefect()
    with cli_errors(), block_api(settings_block, config):
        from genai_ingest.search import citation, hit_row, search_many

        settings = build_settings(data_dir, store, config, settings_block=settings_block)
        filters = {k: v for k, v in (("doc_id", doc_id), ("language", language)) if v}
        results = search_many(settings, queries, k=k, filters=filters or None)
    if as_json:
        rows = [[hit_row(h) for h in hits] for hits in results]
        pairs = zip(queries, rows, strict=True)
        emit(rows[0] if query is not None else [{"query": q, "hits": r} for q, r in pairs])
        return
    for text, hits in zip(queries, results, strict=True):
        if queries_file is not None:
            Console().print(f"[bold]query:[/bold] {text}")
        for i, hit in enumerate(hits, 1):
            row = hit_row(hit)
            Console().print(f"[bold]{i}. {row['score']:.3f}[/bold] {row['source']}{citation(row)}")
            Console().print("   " + row["text"][:300].replace("\n", " "))


def _read_queries(path: Path) -> list[str]:
    queries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    queries = [q for q in queries if q]
    if not queries:
        raise typer.BadParameter(f"{path}: no queries", param_hint="--queries-file")
    return queries


@app.command(name="eval")
def evaluate_retrieval(
    qa_file: Annotated[
        Path,
        typer.Argument(
            help="questions: JSONL {question, source, answer} or TSV with that header",
            exists=True,
            dir_okay=False,
        ),
    ],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="hits per question")] = 5,
    min_passage_at_k: Annotated[
        float | None,
        typer.Option(help="exit 4 when passage@k is below this share (0-1)", min=0.0, max=1.0),
    ] = None,
    data_dir: DataDir = None,
    store: StoreUrl = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
    settings_block: SettingsBlock = None,
) -> None:
    """Retrieval quality on a QA set: doc@k, passage@k, MRR and the questions missed."""
    quiet_prefect()
    with cli_errors(), block_api(settings_block, config):
        from genai_ingest.evaluate import Retrieved, evaluate, load_qa
        from genai_ingest.search import search_many

        try:
            items = load_qa(qa_file)
        except (ValueError, KeyError) as exc:
            raise typer.BadParameter(str(exc), param_hint="QA_FILE") from None
        settings = build_settings(data_dir, store, config, settings_block=settings_block)

        def search_qa(questions: list[str], top: int) -> list[list[Retrieved]]:
            results = search_many(settings, questions, k=top)
            return [[Retrieved(h.source, h.text) for h in hits] for hits in results]

        report = evaluate(items, search_qa, k)
    if as_json:
        emit(report.as_dict())
    else:
        _print_eval(report)
    if min_passage_at_k is not None and report.passage_at_k < min_passage_at_k:
        console.print(
            f"passage@{k} {report.passage_at_k:.3f} is below --min-passage-at-k {min_passage_at_k}"
        )
        raise typer.Exit(4)


def _print_eval(report: Any) -> None:
    table = Table(title=f"retrieval on {report.questions} questions")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row(f"doc@{report.k}", f"{report.doc_at_k:.3f}")
    table.add_row(f"passage@{report.k}", f"{report.passage_at_k:.3f}")
    table.add_row("MRR", f"{report.mrr:.3f}")
    Console().print(table)
    for miss in report.misses:
        where = f"document at rank {miss.doc_rank}" if miss.doc_rank else "document not in top k"
        Console().print(f"miss: {miss.item.question} [{miss.item.source}] ({where})")


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
