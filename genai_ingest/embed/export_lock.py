"""The query encoder's export folder: one process at a time writes it (a non-blocking file
lock beside it), and a damaged export is removed so the next run makes it again."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path


def discard(folder: Path) -> None:
    """Remove a damaged export, unless another process is exporting it right now."""
    with contextlib.suppress(OSError), slot_lock(folder) as held:
        if held:
            remove_folder(folder)


@contextlib.contextmanager
def slot_lock(folder: Path) -> Iterator[bool]:
    """Yields whether this process holds the export's lock (never waits for another one)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with folder.with_name(folder.name + ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wait_for_exporter(folder: Path, timeout_s: float, poll_s: float = 0.2) -> None:
    """Return once no other process holds the export's lock, or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with slot_lock(folder) as held:
            if held:
                return
        time.sleep(poll_s)


def remove_folder(folder: Path) -> None:
    """Renamed away first (gone at once for readers), then deleted."""
    if folder.exists():
        trash = folder.with_name(f"{folder.name}.trash-{os.getpid()}")
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
