"""``genai-ingest``: run ingestion, search the index, inspect stats and the DLQ."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from genai_ingest.config import RemoteEndpoint, Settings
from genai_ingest.dlq import EntryStatus
from genai_ingest.errors import IngestError
from genai_ingest.server_cli import server_app

app = typer.Typer(
    help="Fault-tolerant, idempotent document ingestion for RAG.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dlq_app = typer.Typer(help="Inspect, replay or discard dead-lettered documents.")
app.add_typer(dlq_app, name="dlq")
app.add_typer(server_app, name="server")
console = Console(stderr=True, soft_wrap=True)  # messages stay whole lines, not wrapped
#: Read as the ``--embedder`` key when set and no ``--embedder-api-key-env`` names another.
DEFAULT_API_KEY_ENV = "GENAI_INGEST_EMBEDDER_API_KEY"

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="state folder [env GENAI_INGEST_DATA_DIR; default ./.genai-ingest]"
    ),
]
StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Elasticsearch URL; default: the embedded store [env GENAI_INGEST_STORE_URL]",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="settings file (TOML or JSON)", exists=True, dir_okay=False),
]
JsonOut = Annotated[bool, typer.Option("--json", help="print JSON")]
SettingsBlock = Annotated[
    str | None,
    typer.Option(
        "--settings-block",
        help="name of a genai-ingest Settings block on the Prefect server (config and flags"
        " override it)",
    ),
]


def build_settings(
    data_dir: Path | None = None,
    store: str | None = None,
    config: Path | None = None,
    embedder: str | None = None,
    embedder_model: str | None = None,
    settings_block: str | None = None,
    embedder_api_key_env: str | None = None,
) -> Settings:
    """Settings from env, then the settings block, then the config file's top-level keys,
    then flags (flags win)."""
    values: dict[str, Any] = {}
    if settings_block is not None:
        from blocks import load_settings

        values = load_settings(settings_block).model_dump()
    if config is not None:
        text = config.read_text()
        values |= tomllib.loads(text) if config.suffix == ".toml" else json.loads(text)
    if data_dir is not None:
        values["data_dir"] = data_dir
    if store is not None:
        values["store_url"] = store
    if embedder is not None:
        model = embedder_model or values.get("embed", {}).get("model", "all-MiniLM-L6-v2")
        if embedder_api_key_env is None and os.environ.get(DEFAULT_API_KEY_ENV):
            embedder_api_key_env = DEFAULT_API_KEY_ENV
        endpoint = RemoteEndpoint(url=embedder, model=model, api_key_env=embedder_api_key_env)
        values["remote_embed"] = {**values.get("remote_embed", {}), "primary": endpoint}
    return Settings(**values)


@contextmanager
def flow_api(config: Path | None) -> Iterator[None]:
    """Flows and settings blocks need a Prefect API: the configured one, else the local
    server, started on first use (``genai_ingest.local_server``)."""
    from genai_ingest.local_server import prefect_api

    policy = build_settings(config=config).policies.local_server
    with prefect_api(policy, notify=lambda m: console.print(m, markup=False, highlight=False)):
        yield


def preflight(settings: Settings) -> None:
    """Open the runtime the flow will use (process-wide, so no work is repeated): a refused
    API key or another model's index is then one clear line, not a failed flow run."""
    from genai_ingest.pipeline import runtime_for

    runtime_for(settings)


def block_api(settings_block: str | None, config: Path | None) -> AbstractContextManager[None]:
    """A Prefect API only when a settings block is to be loaded from it."""
    return flow_api(config) if settings_block else nullcontext()


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected errors into a clear message and exit code 2, not a traceback."""
    try:
        yield
    except IngestError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {escape(exc.reason)}")
        raise typer.Exit(2) from None
    except (ValueError, KeyError, FileNotFoundError) as exc:
        console.print(f"[red]error[/red]: {escape(str(exc))}")
        raise typer.Exit(2) from None


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


def _quiet_prefect() -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
    _quiet_prefect()
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
    _quiet_prefect()
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
    _quiet_prefect()
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
    _quiet_prefect()
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
