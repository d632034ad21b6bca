"""Search explorer: query the index (kNN, optional filters), see hits with their scores and the
documents they come from, and the index's stats.

    marimo run notebooks/search_explorer.py                          # GENAI_INGEST_DATA_DIR
    marimo run notebooks/search_explorer.py -- --data-dir DIR --query "..."

The logic lives in ``genai_ingest.triage`` (``explorer``); cells only wire it to UI elements."""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="Search explorer")

with app.setup:
    import marimo as mo

    from genai_ingest import triage
    from genai_ingest.stores import open_dlq, open_store

    triage.keep_transformers_out_of_notebook_mode()


@app.cell
def _():
    mo.md("""
    # Search explorer
    """)
    return


@app.cell
def _():
    args = mo.cli_args()
    settings = triage.settings_from_args(args)
    store = open_store(settings)
    dlq = open_dlq(settings)
    mo.md(f"Index `{settings.store_url or settings.database_path}`").style(color="gray")
    return args, dlq, settings, store


@app.cell
def _(dlq, store):
    stats = triage.index_stats(store, dlq)
    mo.vstack(
        [
            mo.hstack(
                [
                    mo.stat(stats["documents"], label="Documents indexed", bordered=True),
                    mo.stat(stats["chunks"], label="Chunks", bordered=True),
                    mo.stat(
                        stats["dimension"] or "-",
                        label="Dimensions",
                        caption=stats["model_id"] or "no model yet",
                        bordered=True,
                    ),
                    mo.stat(stats["dlq_open"], label="Open DLQ entries", bordered=True),
                ],
                justify="start",
                widths="equal",
            ),
            mo.accordion(
                {
                    "Ledger by status, format and language": mo.hstack(
                        [
                            mo.ui.table(
                                [{key: k, "documents": v} for k, v in stats[f"by_{key}"].items()],
                                selection=None,
                                show_search=False,
                                show_download=False,
                            )
                            for key in ("status", "format", "language")
                        ]
                    )
                }
            ),
        ]
    )
    return (stats,)


@app.cell
def _(args, store):
    _options = triage.search_filter_options(store)
    query = mo.ui.text(
        value=str(args.get("query") or ""),
        placeholder="ask the index…",
        label="Query",
        full_width=True,
    )
    k = mo.ui.slider(1, 50, value=5, label="Top k", show_value=True)
    filters = mo.ui.dictionary(
        {
            key: mo.ui.dropdown(_options[key], value=triage.ALL, label=key.replace("_", " "))
            for key in triage.SEARCH_FILTERS
        }
    )
    mo.vstack([query, mo.hstack([k, *filters.elements.values()], justify="start", wrap=True)])
    return filters, k, query


@app.cell
def _(filters, k, query, settings):
    hits = triage.search_hits(settings, query.value, k.value, filters.value)
    hits_table = mo.ui.table(
        hits,
        selection="single",
        page_size=10,
        show_column_summaries=False,
        hidden_columns=["doc_id", "chunk_id", "source"],
        wrapped_columns=["text"],
        label=f"{len(hits)} hits" if query.value.strip() else "Type a query to search.",
    )
    hits_table
    return hits, hits_table


@app.cell
def _(hits, hits_table, store):
    _chosen = hits_table.value
    _hit = _chosen.iloc[0] if len(_chosen) else None
    sources = triage.hit_documents(store, hits["doc_id"])
    mo.hstack(
        [
            mo.vstack(
                [
                    mo.md("**Source documents of the hits**"),
                    mo.ui.table(sources, selection=None, show_search=False),
                ]
            ),
            mo.vstack(
                [
                    mo.md(
                        f"**#{_hit['rank']} · {_hit['name']}"
                        + (f" · p. {_hit['pages']}" if _hit["pages"] else "")
                        + (f" · {_hit['headings']}" if _hit["headings"] else "")
                        + f" · score {_hit['score']}**"
                        if _hit is not None
                        else "Select a hit to read its chunk."
                    ),
                    mo.plain_text(_hit["text"]) if _hit is not None else mo.md(""),
                ]
            ),
        ],
        widths=[3, 2],
        align="start",
    )
    return (sources,)


if __name__ == "__main__":
    app.run()
