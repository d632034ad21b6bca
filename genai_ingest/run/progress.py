"""Progress of a long run, shown by the CLI (rich) and ignored elsewhere."""

from __future__ import annotations

from collections.abc import Callable

_listener: Callable[[str, int], None] | None = None


def set_listener(listener: Callable[[str, int], None] | None) -> None:
    """Install ``listener(event, n)``; events: "total" (documents found), "done" (finished)."""
    global _listener
    _listener = listener


def report(event: str, n: int = 1) -> None:
    if _listener is not None:
        _listener(event, n)
