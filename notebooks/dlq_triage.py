"""DLQ triage: see what failed and why, fix it, replay it.

    marimo run notebooks/dlq_triage.py                       # data dir from GENAI_INGEST_DATA_DIR
    marimo run notebooks/dlq_triage.py -- --data-dir DIR     # or from the command line

Works with the embedded DLQ, Elasticsearch or S3 as configured (``GENAI_INGEST_*``). The logic
lives in ``genai_ingest.triage`` (replays in ``genai_ingest.triage.replay``, run against the local
Prefect server, like the CLI); cells only wire it to UI elements."""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="DLQ triage")

with app.setup:
    import marimo as mo

    from genai_ingest import triage
    from genai_ingest.stores import open_dlq
    from genai_ingest.triage import replay as triage_replay

    triage.keep_transformers_out_of_notebook_mode()


@app.cell
def _():
    mo.md("""
    # DLQ triage
    """)
    return


@app.cell
def _():
    settings = triage.settings_from_args(mo.cli_args())
    dlq = open_dlq(settings)
    mo.md(f"DLQ of `{settings.store_url or settings.database_path}`").style(color="gray")
    return dlq, settings


@app.cell
def _():
    get_version, set_version = mo.state(0)
    get_outcome, set_outcome = mo.state(None)
    return get_outcome, get_version, set_outcome, set_version


@app.cell
def _(dlq, get_version):
    get_version()
    entries = dlq.entries(status=None)
    stats = triage.overview(entries)
    return entries, stats


@app.cell
def _(stats):
    _oldest = stats["oldest_open"]
    _rate = stats["replay_success_rate"]
    mo.hstack(
        [
            mo.stat(stats["open"], label="Open entries", bordered=True),
            mo.stat(stats["resolved"], label="Resolved", bordered=True),
            mo.stat(stats["discarded"], label="Discarded", bordered=True),
            mo.stat(
                f"{_oldest['age_hours']} h" if _oldest else "-",
                label="Oldest open entry",
                caption=_oldest["name"] if _oldest else "nothing open",
                bordered=True,
            ),
            mo.stat(
                f"{_rate:.0%}" if _rate is not None else "-",
                label="Replay success rate",
                caption=f"{stats['replay_successes']} of {stats['replays']} replays",
                bordered=True,
            ),
        ],
        justify="start",
        widths="equal",
    )
    return


@app.cell
def _():
    group_by = mo.ui.dropdown(
        list(triage.TIMELINE_GROUPS), value="error_class", label="Chart open entries by"
    )
    return (group_by,)


@app.cell
def _(entries, group_by, stats):
    _frame = triage.timeline(entries, by=group_by.value)
    mo.hstack(
        [
            mo.vstack(
                [
                    group_by,
                    mo.ui.altair_chart(
                        triage.timeline_chart(_frame, by=group_by.value), chart_selection=False
                    ),
                ]
            ),
            mo.vstack(
                [
                    mo.md("**Open by stage**"),
                    mo.ui.table(
                        [{"stage": k, "open": v} for k, v in stats["by_stage"].items()],
                        selection=None,
                        show_search=False,
                        show_download=False,
                    ),
                    mo.md("**Open by error class**"),
                    mo.ui.table(
                        [{"error_class": k, "open": v} for k, v in stats["by_error_class"].items()],
                        selection=None,
                        show_search=False,
                        show_download=False,
                    ),
                ]
            ),
        ],
        widths=[3, 1],
    )
    return


@app.cell
def _(dlq):
    _options = triage.filter_options(dlq.entries(status=None))
    filters = mo.ui.dictionary(
        {
            "status": mo.ui.dropdown(_options["status"], value="open", label="Status"),
            "stage": mo.ui.dropdown(_options["stage"], value=triage.ALL, label="Stage"),
            "error_class": mo.ui.dropdown(
                _options["error_class"], value=triage.ALL, label="Error class"
            ),
            "source_type": mo.ui.dropdown(
                _options["source_type"], value=triage.ALL, label="Source type"
            ),
            "text": mo.ui.text(placeholder="reason or source contains…", label="Search"),
            "window": mo.ui.dropdown(
                list(triage.TIME_WINDOWS), value="any time", label="Last failure"
            ),
            "min_attempts": mo.ui.number(start=1, stop=1000, value=1, label="Min. attempts"),
            "sort_by": mo.ui.dropdown(
                list(triage.SORTABLE), value="last_failed_at", label="Sort by"
            ),
            "descending": mo.ui.checkbox(value=True, label="descending"),
        }
    )
    mo.hstack(list(filters.elements.values()), wrap=True, justify="start")
    return (filters,)


@app.cell
def _(entries, filters):
    _f = filters.value
    shown = triage.filter_entries(
        entries,
        triage.EntryFilter(
            status=_f["status"],
            stage=_f["stage"],
            error_class=_f["error_class"],
            source_type=_f["source_type"],
            text=_f["text"],
            since=triage.window_start(_f["window"]),
            min_attempts=int(_f["min_attempts"] or 1),
            sort_by=_f["sort_by"],
            descending=_f["descending"],
        ),
    )
    table = mo.ui.table(
        triage.entries_frame(shown),
        selection="multi",
        page_size=10,
        show_column_summaries=False,
        hidden_columns=["entry_id", "error_kind", "first_failed_at", "raw_size", "source"],
        label=f"{len(shown)} of {len(entries)} entries",
    )
    table
    return shown, table


@app.cell
def _(table):
    selected_ids = list(table.value["entry_id"]) if len(table.value) else []
    return (selected_ids,)


@app.cell
def _():
    password = mo.ui.text(kind="password", label="Password (encrypted files; never stored)")
    skip_language = mo.ui.checkbox(label="skip language check")
    deployment = mo.ui.text(value=triage_replay.DEFAULT_DEPLOYMENT, label="Deployment dlq_replay/")
    secret_block = mo.ui.text(placeholder="Secret block name", label="Password secret block")
    discard_reason = mo.ui.text(placeholder="why it will never be indexed", label="Reason")
    metadata_json = mo.ui.text_area(placeholder='{"title": "..."}', label="Metadata (JSON)")
    unsafe_content = mo.ui.dropdown(
        list(triage.UNSAFE_CONTENT), label="Unsafe content", allow_select_none=True
    )
    override_language = mo.ui.checkbox(label="skip language check on replay")
    return (
        deployment,
        discard_reason,
        metadata_json,
        override_language,
        password,
        secret_block,
        skip_language,
        unsafe_content,
    )


@app.cell
def _(
    deployment,
    discard_reason,
    dlq,
    entries,
    metadata_json,
    override_language,
    password,
    secret_block,
    selected_ids,
    set_outcome,
    set_version,
    settings,
    skip_language,
    unsafe_content,
):
    def _on_click(action):
        """A button handler: run ``action`` on the selection once per click, then refresh."""

        def _handler(_value):
            set_outcome(triage_replay.run_action(selected_ids, action))
            set_version(lambda v: v + 1)

        return _handler

    replay_button = mo.ui.button(
        label="Replay now",
        kind="success",
        on_click=_on_click(
            lambda: triage_replay.replay_message(
                triage_replay.replay_in_process(
                    settings, selected_ids, password.value or None, skip_language.value
                ),
                entries,
            )
        ),
    )
    deploy_button = mo.ui.button(
        label="Replay via deployment",
        on_click=_on_click(
            lambda: triage_replay.replay_via_deployment(
                selected_ids,
                deployment.value.strip() or triage_replay.DEFAULT_DEPLOYMENT,
                secret_block.value.strip() or None,
                skip_language.value,
            )
        ),
    )
    discard_button = mo.ui.button(
        label="Discard",
        kind="danger",
        on_click=_on_click(
            lambda: f"Discarded {triage.discard(dlq, selected_ids, discard_reason.value)}."
        ),
    )
    overrides_button = mo.ui.button(
        label="Save overrides",
        on_click=_on_click(
            lambda: triage.set_overrides(
                dlq,
                selected_ids,
                triage.parse_overrides(
                    metadata_json.value, override_language.value, unsafe_content.value
                ),
            )
        ),
    )
    refresh_button = mo.ui.button(
        label="Refresh", on_click=lambda _value: set_version(lambda v: v + 1)
    )
    return deploy_button, discard_button, overrides_button, refresh_button, replay_button


@app.cell
def _(dlq, password, selected_ids):
    _entry = dlq.get(selected_ids[0]) if selected_ids else None
    if _entry is None:
        detail = mo.md("Select entries in the table to see details and act on them.")
    else:
        _preview = triage.preview(
            dlq.raw(_entry.entry_id), triage.source_name(_entry.source), password.value or None
        )
        _shown = (
            mo.image(_preview.png, width=480, style={"border": "1px solid #ddd"})
            if _preview.png
            else mo.plain_text(_preview.text)
            if _preview.text
            else mo.callout(_preview.note, kind="neutral")
        )
        detail = mo.vstack(
            [
                mo.md(f"### {triage.source_name(_entry.source)} · `{_entry.status.value}`"),
                mo.callout(
                    mo.md(
                        f"**{_entry.stage} / {_entry.error_class}** ({_entry.error_kind}): "
                        f"{_entry.reason}  \nParsers tried: "
                        f"{', '.join(_entry.parsers_tried) or 'none'}"
                        + (
                            f"  \n**{_entry.status.value}**: {_entry.resolution}"
                            if _entry.resolution
                            else ""
                        )
                    ),
                    kind="warn" if _entry.status.value == "open" else "success",
                ),
                mo.ui.tabs(
                    {
                        "Details": mo.ui.table(
                            [
                                {"field": k, "value": str(v)}
                                for k, v in triage.entry_details(_entry).items()
                            ],
                            selection=None,
                            page_size=20,
                            show_search=False,
                        ),
                        "Stack trace": mo.plain_text(_entry.traceback),
                        "History": mo.ui.table(
                            triage.history_frame(_entry), selection=None, show_search=False
                        ),
                        "Preview": mo.vstack([mo.md(_preview.note), _shown]),
                    }
                ),
            ]
        )
    return (detail,)


@app.cell
def _(entries, get_outcome):
    _outcome = get_outcome()
    if _outcome is None:
        outcome_view = mo.Html("")
    else:
        _run = _outcome.run
        _state = triage_replay.deployment_run_state(_run.flow_run_id) if _run else None
        outcome_view = mo.vstack(
            [
                mo.callout(
                    mo.md(
                        _outcome.message
                        + (f"  \n[Open flow run]({_run.url}) · state **{_state}**" if _run else "")
                    ),
                    kind="success" if _outcome.ok else "danger",
                ),
                mo.ui.table(
                    triage.entries_frame(triage.entries_by_id(entries, _outcome.entry_ids))[
                        ["name", "status", "attempts", "resolution", "reason"]
                    ],
                    selection=None,
                    show_search=False,
                    show_download=False,
                    label="Entries acted on, as they are now",
                ),
            ]
        )
    return (outcome_view,)


@app.cell
def _(
    deploy_button,
    deployment,
    detail,
    discard_button,
    discard_reason,
    entries,
    metadata_json,
    outcome_view,
    override_language,
    overrides_button,
    password,
    refresh_button,
    replay_button,
    secret_block,
    selected_ids,
    shown,
    skip_language,
    unsafe_content,
):
    _actions = mo.vstack(
        [
            mo.md(f"### Actions on {len(selected_ids)} selected"),
            mo.md("**Replay**"),
            password,
            skip_language,
            mo.hstack([replay_button, refresh_button], justify="start"),
            mo.hstack([deployment, secret_block, deploy_button], justify="start", wrap=True),
            mo.md("**Fix before replaying**"),
            metadata_json,
            mo.hstack([unsafe_content, override_language, overrides_button], justify="start"),
            mo.md("**Give up**"),
            mo.hstack([discard_reason, discard_button], justify="start"),
            mo.download(
                lambda: triage.export_csv(
                    triage.entries_by_id(entries, selected_ids) or shown
                ).encode(),
                filename="dlq-entries.csv",
                mimetype="text/csv",
                label="Export CSV (selection, or all shown)",
            ),
        ]
    )
    mo.vstack([outcome_view, mo.hstack([detail, _actions], widths=[3, 2], align="start")])
    return


if __name__ == "__main__":
    app.run()
