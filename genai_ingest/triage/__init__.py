"""Triage: the logic behind the DLQ triage and search explorer apps (``notebooks/``), as plain
functions the apps call as ``triage.<name>``: start-up (``apps``), DLQ entries and actions
(``entries``), raw previews (``previews``), search explorer (``explorer``); replays in
``triage.replay``."""

from __future__ import annotations

from genai_ingest.triage.apps import keep_transformers_out_of_notebook_mode, settings_from_args
from genai_ingest.triage.entries import (
    ALL,
    ENTRY_COLUMNS,
    SORTABLE,
    TIME_WINDOWS,
    TIMELINE_GROUPS,
    UNSAFE_CONTENT,
    EntryFilter,
    discard,
    entries_by_id,
    entries_frame,
    entry_details,
    entry_row,
    export_csv,
    filter_entries,
    filter_options,
    history_frame,
    overview,
    parse_overrides,
    replay_outcomes,
    set_overrides,
    source_name,
    timeline,
    timeline_chart,
    window_start,
)
from genai_ingest.triage.explorer import (
    SEARCH_FILTERS,
    hit_documents,
    index_stats,
    search_filter_options,
    search_hits,
)
from genai_ingest.triage.previews import TEXT_FORMATS, Preview, preview

__all__ = [
    "ALL",
    "ENTRY_COLUMNS",
    "SEARCH_FILTERS",
    "SORTABLE",
    "TEXT_FORMATS",
    "TIMELINE_GROUPS",
    "TIME_WINDOWS",
    "UNSAFE_CONTENT",
    "EntryFilter",
    "Preview",
    "discard",
    "entries_by_id",
    "entries_frame",
    "entry_details",
    "entry_row",
    "export_csv",
    "filter_entries",
    "filter_options",
    "history_frame",
    "hit_documents",
    "index_stats",
    "keep_transformers_out_of_notebook_mode",
    "overview",
    "parse_overrides",
    "preview",
    "replay_outcomes",
    "search_filter_options",
    "search_hits",
    "set_overrides",
    "settings_from_args",
    "source_name",
    "timeline",
    "timeline_chart",
    "window_start",
]
