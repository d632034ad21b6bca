"""The DLQ triage app's entries as plain functions: rows and filters, the overview and
timeline, an entry's history, CSV export, and the actions (overrides, discard).

The notebooks (``notebooks/dlq_triage.py``, ``notebooks/search_explorer.py``) only wire these
to marimo UI elements. Works with every DLQ ``open_dlq`` returns. Passwords are passed to a
replay only; they are never written to the DLQ."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

import altair as alt
import pandas as pd

from genai_ingest.failures.dlq import DeadLetter, DeadLetterQueue, EntryStatus
from genai_ingest.models import SourceRef, utcnow

ALL = "all"
ENTRY_COLUMNS = (
    "entry_id",
    "name",
    "status",
    "stage",
    "error_class",
    "error_kind",
    "reason",
    "attempts",
    "source_type",
    "first_failed_at",
    "last_failed_at",
    "raw_size",
    "parsers_tried",
    "overrides",
    "resolution",
    "source",
)
SORTABLE = ("last_failed_at", "first_failed_at", "attempts", "stage", "error_class", "name")
TIMELINE_GROUPS = ("error_class", "stage", "reason")
UNSAFE_CONTENT = ("reject", "redact", "allow")
#: Time windows for the last failure, in hours (None: any time).
TIME_WINDOWS: dict[str, int | None] = {
    "any time": None,
    "last hour": 1,
    "last 24 hours": 24,
    "last 7 days": 7 * 24,
    "last 30 days": 30 * 24,
}


# --- entries: rows, filters, overview ---------------------------------------------------------


def source_name(source: str) -> str:
    return PurePosixPath(urlparse(source).path).name or source


def entry_row(entry: DeadLetter) -> dict[str, Any]:
    """One flat, table-friendly row (JSON-safe values)."""
    return {
        "entry_id": entry.entry_id,
        "name": source_name(entry.source),
        "status": entry.status.value,
        "stage": entry.stage,
        "error_class": entry.error_class,
        "error_kind": entry.error_kind,
        "reason": entry.reason,
        "attempts": entry.attempts,
        "source_type": SourceRef(uri=entry.source, name="").source_type,
        "first_failed_at": entry.first_failed_at.isoformat(timespec="seconds"),
        "last_failed_at": entry.last_failed_at.isoformat(timespec="seconds"),
        "raw_size": entry.raw_size,
        "parsers_tried": ", ".join(entry.parsers_tried),
        "overrides": json.dumps(entry.overrides, sort_keys=True) if entry.overrides else "",
        "resolution": entry.resolution or "",
        "source": entry.source,
    }


def entries_frame(entries: Iterable[DeadLetter]) -> pd.DataFrame:
    """Entries as a DataFrame with ``ENTRY_COLUMNS`` (empty but typed when there are none)."""
    return pd.DataFrame([entry_row(e) for e in entries], columns=list(ENTRY_COLUMNS))


@dataclass(frozen=True)
class EntryFilter:
    """What the entries table shows; ``None``/``ALL`` means no constraint."""

    status: str = EntryStatus.OPEN.value
    stage: str | None = None
    error_class: str | None = None
    source_type: str | None = None
    text: str = ""
    since: datetime | None = None
    until: datetime | None = None
    min_attempts: int = 1
    sort_by: str = "last_failed_at"
    descending: bool = True

    def matches(self, entry: DeadLetter) -> bool:
        row = entry_row(entry)
        needle = self.text.strip().lower()
        at = entry.last_failed_at
        return (
            all(
                wanted in (None, ALL, row[key])
                for key, wanted in (
                    ("status", self.status),
                    ("stage", self.stage),
                    ("error_class", self.error_class),
                    ("source_type", self.source_type),
                )
            )
            and (not needle or needle in f"{entry.reason}\n{entry.source}".lower())
            and (self.since is None or at >= self.since)
            and (self.until is None or at <= self.until)
            and entry.attempts >= self.min_attempts
        )


def window_start(window: str, now: datetime | None = None) -> datetime | None:
    """Start of a ``TIME_WINDOWS`` window ending now (None: any time)."""
    hours = TIME_WINDOWS[window]
    return None if hours is None else (now or utcnow()) - timedelta(hours=hours)


def filter_entries(entries: Iterable[DeadLetter], flt: EntryFilter) -> list[DeadLetter]:
    """The entries ``flt`` keeps, sorted by ``flt.sort_by``."""
    if flt.sort_by not in SORTABLE:
        raise ValueError(f"cannot sort by {flt.sort_by!r}; sortable: {SORTABLE}")
    kept = [e for e in entries if flt.matches(e)]
    return sorted(
        kept, key=lambda e: (entry_row(e)[flt.sort_by], e.entry_id), reverse=flt.descending
    )


def filter_options(entries: Iterable[DeadLetter]) -> dict[str, list[str]]:
    """Values seen per filterable column, for dropdowns (``ALL`` first)."""
    rows = [entry_row(e) for e in entries]
    options = {
        key: [ALL, *sorted({r[key] for r in rows})]
        for key in ("stage", "error_class", "source_type")
    }
    options["status"] = [ALL, *(s.value for s in EntryStatus)]
    return options


def replay_outcomes(entry: DeadLetter) -> tuple[int, int]:
    """(replays, successful replays) read from the history: every failure after the first
    and every resolution is a replay; resolutions are the successful ones."""
    failures = sum(1 for h in entry.history if "error_class" in h)
    resolved = sum(1 for h in entry.history if h.get("status") == EntryStatus.RESOLVED.value)
    return max(failures - 1, 0) + resolved, resolved


def overview(entries: Sequence[DeadLetter], now: datetime | None = None) -> dict[str, Any]:
    """Totals per status, open entries by stage and error class, the oldest open entry and
    the replay success rate (None before any replay)."""
    now = now or utcnow()
    statuses = Counter(e.status.value for e in entries)
    open_entries = [e for e in entries if e.status is EntryStatus.OPEN]
    oldest = min(open_entries, key=lambda e: e.first_failed_at, default=None)
    replays = successes = 0
    for entry in entries:
        tried, ok = replay_outcomes(entry)
        replays, successes = replays + tried, successes + ok
    return {
        "total": len(entries),
        **{s.value: statuses.get(s.value, 0) for s in EntryStatus},
        "by_stage": dict(Counter(e.stage for e in open_entries).most_common()),
        "by_error_class": dict(Counter(e.error_class for e in open_entries).most_common()),
        "oldest_open": None
        if oldest is None
        else {
            "entry_id": oldest.entry_id,
            "name": source_name(oldest.source),
            "first_failed_at": oldest.first_failed_at.isoformat(timespec="seconds"),
            "age_hours": round((now - oldest.first_failed_at).total_seconds() / 3600, 1),
        },
        "replays": replays,
        "replay_successes": successes,
        "replay_success_rate": successes / replays if replays else None,
    }


def timeline(entries: Iterable[DeadLetter], by: str = "error_class") -> pd.DataFrame:
    """Open entries per day of their last failure and per ``by`` (stage, error class or
    reason): columns ``day``, ``by``, ``count``."""
    if by not in TIMELINE_GROUPS:
        raise ValueError(f"cannot group by {by!r}; choose one of {TIMELINE_GROUPS}")
    rows = [
        {"day": e.last_failed_at.date().isoformat(), by: entry_row(e)[by]}
        for e in entries
        if e.status is EntryStatus.OPEN
    ]
    frame = pd.DataFrame(rows, columns=["day", by])
    return frame.groupby(["day", by]).size().reset_index(name="count")


def timeline_chart(frame: pd.DataFrame, by: str = "error_class") -> alt.Chart:
    """Stacked bars of ``timeline(...)``: open entries per day, coloured by ``by``."""
    days = max(frame["day"].nunique(), 1)
    return (
        alt.Chart(frame, title=f"Open entries by {by.replace('_', ' ')}")
        .mark_bar(size=min(40, 560 // days))
        .encode(
            x=alt.X(
                "utcyearmonthdate(day):O",
                title="last failure (UTC day)",
                axis=alt.Axis(labelAngle=0, format="%Y-%m-%d"),
            ),
            y=alt.Y("count:Q", title="open entries", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color(f"{by}:N", title=by.replace("_", " ")),
            tooltip=[alt.Tooltip("utcyearmonthdate(day):T", title="day"), f"{by}:N", "count:Q"],
        )
        .properties(height=220, width="container")
    )


def history_frame(entry: DeadLetter) -> pd.DataFrame:
    """The attempt history: failures and closures, oldest first."""
    rows = [
        {
            "at": h.get("at", ""),
            "event": h.get("status") or "failed",
            "stage": h.get("stage", ""),
            "error_class": h.get("error_class", ""),
            "detail": h.get("reason") or h.get("note") or "",
            "version": (h.get("version") or "")[:12],
        }
        for h in entry.history
    ]
    return pd.DataFrame(rows, columns=["at", "event", "stage", "error_class", "detail", "version"])


def entry_details(entry: DeadLetter) -> dict[str, Any]:
    """The entry's metadata without the long fields (stack trace, history)."""
    data = entry.to_json()
    return {k: v for k, v in data.items() if k not in ("traceback", "history")}


def entries_by_id(entries: Iterable[DeadLetter], entry_ids: Iterable[str]) -> list[DeadLetter]:
    """The entries with these ids, in the given order (unknown ids are skipped)."""
    index = {e.entry_id: e for e in entries}
    return [index[i] for i in entry_ids if i in index]


def export_csv(entries: Iterable[DeadLetter]) -> str:
    """Entries as CSV (``ENTRY_COLUMNS``), stack traces and histories left out."""
    return entries_frame(entries).to_csv(index=False)


# --- actions ----------------------------------------------------------------------------------


def parse_overrides(
    metadata_json: str = "",
    skip_language_check: bool = False,
    unsafe_content: str | None = None,
) -> dict[str, Any]:
    """Validated overrides from UI input: metadata as a JSON object, validation switches.
    Only what is set is returned (``set_overrides`` merges)."""
    overrides: dict[str, Any] = {}
    if metadata_json.strip():
        metadata = json.loads(metadata_json)
        if not isinstance(metadata, dict):
            raise ValueError("metadata must be a JSON object")
        if any("password" in str(key).lower() for key in metadata):
            raise ValueError("passwords are never stored in the DLQ: supply them on replay")
        overrides["metadata"] = metadata
    if skip_language_check:
        overrides["skip_language_check"] = True
    if unsafe_content:
        if unsafe_content not in UNSAFE_CONTENT:
            raise ValueError(f"unsafe_content must be one of {UNSAFE_CONTENT}")
        overrides["unsafe_content"] = unsafe_content
    return overrides


def set_overrides(dlq: DeadLetterQueue, entry_ids: Sequence[str], overrides: dict[str, Any]) -> str:
    """Merge ``overrides`` into each entry; returns a message for the UI."""
    if not overrides:
        raise ValueError("nothing to save: set metadata or a validation override")
    for entry_id in entry_ids:
        dlq.set_overrides(entry_id, overrides)
    return f"Overrides saved on {len(entry_ids)} entries: {json.dumps(overrides, sort_keys=True)}"


def discard(dlq: DeadLetterQueue, entry_ids: Sequence[str], reason: str) -> int:
    """Discard open entries with a reason (required); returns how many were discarded."""
    if not reason.strip():
        raise ValueError("a reason is required to discard entries")
    open_ids = [i for i in entry_ids if (e := dlq.get(i)) and e.status is EntryStatus.OPEN]
    for entry_id in open_ids:
        dlq.discard(entry_id, reason.strip())
    return len(open_ids)
