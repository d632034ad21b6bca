"""``genai-ingest search`` and ``genai-ingest eval``: kNN search over the index, and retrieval
quality on a QA set. Registered on the main app by ``genai_ingest.cli.app``; they import no Prefect,
docling or LlamaIndex (a search starts fast)."""

from __future__ import annotations

from pathlib import Path
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
    block_api,
    build_settings,
    cli_errors,
    console,
    emit,
    quiet_prefect,
)
from genai_ingest.config import SearchMode, Settings

Mode = Annotated[
    SearchMode | None,
    typer.Option(
        "--mode",
        help="rank by dense vectors, lexical BM25 or hybrid (both fused); "
        "default: search.mode of the settings",
    ),
]


def with_mode(settings: Settings, mode: SearchMode | None) -> Settings:
    """The settings with ``search.mode`` set by the ``--mode`` flag, when given."""
    if mode is None:
        return settings
    return settings.model_copy(update={"search": settings.search.model_copy(update={"mode": mode})})


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
    mode: Mode = None,
    data_dir: DataDir = None,
    store: StoreUrl = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
    settings_block: SettingsBlock = None,
) -> None:
    """Search the index: one query, or every line of --queries-file (JSON: a list of
    {"query", "mode", "hits"}). Hits carry page_start, page_end and headings for citing them,
    and the mode that ranked them."""
    if (query is None) == (queries_file is None):
        raise typer.BadParameter("give a QUERY or --queries-file, not both")
    queries = [query] if query is not None else _read_queries(queries_file)
    quiet_prefect()
    with cli_errors(), block_api(settings_block, config):
        from genai_ingest.search.query import citation, hit_row, search_many

        settings = with_mode(
            build_settings(data_dir, store, config, settings_block=settings_block), mode
        )
        filters = {k: v for k, v in (("doc_id", doc_id), ("language", language)) if v}
        results = search_many(settings, queries, k=k, filters=filters or None)
    ranked_by = settings.search.mode.value
    if as_json:
        rows = [[hit_row(h, ranked_by) for h in hits] for hits in results]
        pairs = zip(queries, rows, strict=True)
        emit(
            rows[0]
            if query is not None
            else [{"query": q, "mode": ranked_by, "hits": r} for q, r in pairs]
        )
        return
    for text, hits in zip(queries, results, strict=True):
        if queries_file is not None:
            Console().print(f"[bold]query:[/bold] {text}")
        for i, hit in enumerate(hits, 1):
            row = hit_row(hit, ranked_by)
            Console().print(f"[bold]{i}. {row['score']:.3f}[/bold] {row['source']}{citation(row)}")
            Console().print("   " + row["text"][:300].replace("\n", " "))


def _read_queries(path: Path) -> list[str]:
    queries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    queries = [q for q in queries if q]
    if not queries:
        raise typer.BadParameter(f"{path}: no queries", param_hint="--queries-file")
    return queries


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
    mode: Mode = None,
    data_dir: DataDir = None,
    store: StoreUrl = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
    settings_block: SettingsBlock = None,
) -> None:
    """Retrieval quality on a QA set: doc@k, passage@k, MRR and the questions missed, with
    the search mode that ranked the hits."""
    quiet_prefect()
    with cli_errors(), block_api(settings_block, config):
        from genai_ingest.search.evaluate import Retrieved, evaluate, load_qa
        from genai_ingest.search.query import search_many

        try:
            items = load_qa(qa_file)
        except (ValueError, KeyError) as exc:
            raise typer.BadParameter(str(exc), param_hint="QA_FILE") from None
        settings = with_mode(
            build_settings(data_dir, store, config, settings_block=settings_block), mode
        )

        def search_qa(questions: list[str], top: int) -> list[list[Retrieved]]:
            results = search_many(settings, questions, k=top)
            return [[Retrieved(h.source, h.text) for h in hits] for hits in results]

        report = evaluate(items, search_qa, k)
    ranked_by = settings.search.mode.value
    if as_json:
        emit({"mode": ranked_by, **report.as_dict()})
    else:
        _print_eval(report, ranked_by)
    if min_passage_at_k is not None and report.passage_at_k < min_passage_at_k:
        console.print(
            f"passage@{k} {report.passage_at_k:.3f} is below --min-passage-at-k {min_passage_at_k}"
        )
        raise typer.Exit(4)


def _print_eval(report: Any, mode: str) -> None:
    table = Table(title=f"retrieval on {report.questions} questions")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("search mode", mode)
    table.add_row(f"doc@{report.k}", f"{report.doc_at_k:.3f}")
    table.add_row(f"passage@{report.k}", f"{report.passage_at_k:.3f}")
    table.add_row("MRR", f"{report.mrr:.3f}")
    Console().print(table)
    for miss in report.misses:
        where = f"document at rank {miss.doc_rank}" if miss.doc_rank else "document not in top k"
        Console().print(f"miss: {miss.item.question} [{miss.item.source}] ({where})")
