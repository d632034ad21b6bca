"""Memory of a run that does almost nothing: the peak RSS of the whole process tree (CLI,
the local Prefect server it starts, parser workers, converters), side by side for this
checkout and an earlier one.

    .venv/bin/python bench/memory_bench.py                  # this checkout
    .venv/bin/python bench/memory_bench.py --before d9568b1 # and a git revision, side by side

Each checkout runs ``genai-ingest run`` twice on a folder of one short Markdown file, on a fresh
HOME and data dir: a first run (starts the local server, parses, embeds one chunk) and a no-op
re-run. Every process started for the checkout carries a marker in its environment, so the
server the CLI starts in the background is counted too; memory is sampled every 50 ms, as the
sum of RSS (what ``ps`` shows; libraries mapped by several processes count in each) and of PSS
(each shared page split among the processes that map it: the tree's real footprint). The row
names the processes at the RSS peak, largest first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_bench import _worktree
from startup_bench import fresh_env, stop_local_server

REPO = Path(__file__).resolve().parent.parent
MARKER = "GENAI_INGEST_MEMORY_BENCH"
NOTE = "# Note\n\nA short note about the memory a nearly idle ingestion run takes.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", help="git revision to compare with")
    args = parser.parse_args()
    trees = {"after": REPO}
    if args.before:
        trees = {"before": _worktree(args.before), **trees}
    rows = {label: measure(tree) for label, tree in trees.items()}
    print("| checkout | phase | peak tree RSS GB | peak tree PSS GB | RSS at the peak (GB) |")
    print("|---|---|---|---|---|")
    for label, phases in rows.items():
        for phase, (rss, pss, top) in phases.items():
            print(f"| {label} | {phase} | {rss / 2**30:.2f} | {pss / 2**30:.2f} | {top} |")


def measure(tree: Path) -> dict[str, tuple[int, int, str]]:
    root = Path(tempfile.mkdtemp(prefix="genai-ingest-memory-"))
    (root / "home").mkdir()
    (root / "docs").mkdir()
    (root / "docs" / "note.md").write_text(NOTE)
    token = uuid.uuid4().hex
    env = {**fresh_env(root / "home", tree), MARKER: token}
    cli = str(Path(sys.executable).parent / "genai-ingest")
    run = [cli, "run", str(root / "docs"), "--json", "--data-dir", str(root / "state")]
    phases = {}
    try:
        for phase in ("first run", "no-op re-run"):
            phases[phase] = _peak_while(run, env, tree, token)
            rss, pss, _ = phases[phase]
            print(
                f"{tree.name:24} {phase:14} {rss / 2**30:5.2f} / {pss / 2**30:5.2f} GB",
                file=sys.stderr,
            )
    finally:
        stop_local_server(env, root / "home")
    return phases


def _peak_while(
    command: list[str], env: dict[str, str], cwd: Path, token: str
) -> tuple[int, int, str]:
    """Peak RSS and peak PSS of the run's processes, and the largest processes at the RSS peak."""
    child = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak, peak_pss, at_peak = 0, 0, []
    while child.poll() is None:
        sample = _marked_processes(token)
        total = sum(rss for _, rss, _ in sample)
        peak_pss = max(peak_pss, sum(pss for _, _, pss in sample))
        if total > peak:
            peak, at_peak = total, sample
        time.sleep(0.05)
    if child.returncode != 0:
        return peak, peak_pss, f"FAILED (exit {child.returncode}): {child.stderr.read()[-200:]!r}"
    top = sorted(at_peak, key=lambda item: -item[1])[:5]
    return peak, peak_pss, ", ".join(f"{name} {rss / 2**30:.2f}" for name, rss, _ in top)


def _marked_processes(token: str) -> list[tuple[str, int, int]]:
    """(role, RSS, PSS) of each process of the run: PSS shares the pages several processes map
    (torch's libraries in the CLI and in each parser worker) among them."""
    found = []
    for process in psutil.process_iter(["pid", "name"]):
        with contextlib.suppress(psutil.Error):
            if process.pid != os.getpid() and process.environ().get(MARKER) == token:
                memory = process.memory_full_info()
                found.append((_role(process), memory.rss, memory.pss))
    return found


def _role(process: psutil.Process) -> str:
    cmdline = " ".join(process.cmdline())
    for needle, role in (
        ("prefect", "prefect server"),
        ("multiprocessing", "parser worker"),
        ("soffice", "soffice"),
        ("genai-ingest", "cli"),
    ):
        if needle in cmdline:
            return role
    return process.name()


if __name__ == "__main__":
    main()
