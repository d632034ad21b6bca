"""Hostile-input cases (issue 9): outcome, wall time and peak memory of each, side by side for
this checkout and an earlier one.

    .venv/bin/python bench/hostile_bench.py                    # this checkout only
    .venv/bin/python bench/hostile_bench.py --before d9568b1   # and a git revision, side by side

Each case runs in its own process (the document stages as ``genai_ingest.run.prepare`` runs them:
list, fetch, parse in the worker pool, clean, validate, chunk with the model's tokenizer), with
the peak RSS of its whole process tree (parser workers included) sampled every 50 ms. A case
is killed at ``--timeout`` seconds or ``--max-rss-gb`` (so the earlier code cannot take the
machine down); the kill is the outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
CASES = [
    "secrets_csv",
    "secrets_escaped_md",
    "symlink_out",
    "awkward_names",
    "special_files",
    "path_max",
    "pptx_bomb",
    "single_line_50mb",
    "csv_1m_columns",
    "blank_pages_5000",
    "flate_bomb_pdf",
    "near_limit_png",
    "nested_divs",
    "drip_download",
    "metadata_url",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", help="git revision to compare with")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--max-rss-gb", type=float, default=4.0)
    parser.add_argument("--cases", nargs="*", default=CASES)
    args = parser.parse_args()
    trees = {"after": REPO}
    if args.before:
        trees = {"before": _worktree(args.before), **trees}
    rows = {case: {} for case in args.cases}
    for label, tree in trees.items():
        for case in args.cases:
            rows[case][label] = _measure(tree, case, args.timeout, args.max_rss_gb)
            print(f"{label:6} {case:20} {_cell(rows[case][label])}", file=sys.stderr)
    _print_table(rows, list(trees))


def _worktree(revision: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"genai-ingest-{revision}"
    if not path.exists():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), revision],
            check=True,
            capture_output=True,
        )
    return path


def _measure(tree: Path, case: str, timeout: float, max_rss_gb: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "result.json"
        started = time.monotonic()
        child = psutil.Popen(
            [sys.executable, str(REPO / "bench" / "hostile_cases.py"), case, work, str(out)],
            env=env,
            cwd=tree,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        peak, killed = 0, None
        while child.poll() is None:
            rss = _tree_rss(child)
            peak = max(peak, rss)
            elapsed = time.monotonic() - started
            if elapsed > timeout or rss > max_rss_gb * 2**30:
                killed = f"killed at {elapsed:.0f}s, {rss / 2**30:.1f} GB"
                for process in [*child.children(recursive=True), child]:
                    process.kill()
                child.wait()
                break
            time.sleep(0.05)
        wall = time.monotonic() - started
        result = json.loads(out.read_text()) if out.exists() and not killed else {}
    return {
        "outcome": killed or result.get("outcome", f"crashed (exit {child.returncode})"),
        "wall_s": wall,
        "peak_gb": peak / 2**30,
    }


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for each in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += each.memory_info().rss
    return total


def _cell(row: dict) -> str:
    return f"{row['outcome'][:70]:70} {row['wall_s']:6.1f}s {row['peak_gb']:5.2f} GB"


def _print_table(rows: dict, labels: list[str]) -> None:
    print("| case | " + " | ".join(f"{label}: outcome | s | peak GB" for label in labels) + " |")
    print("|---|" + "---|---|---|" * len(labels))
    for case, results in rows.items():
        cells = [
            f"{results[label]['outcome']} | {results[label]['wall_s']:.1f} | "
            f"{results[label]['peak_gb']:.2f}"
            for label in labels
        ]
        print(f"| {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
