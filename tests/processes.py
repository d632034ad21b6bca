"""The Prefect CLI as tests call it, and stopping the long-running processes a test starts
(Prefect workers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_checked(
    args: list[str], *, timeout: float, env: dict[str, str] | None = None, stdin: str | None = None
) -> str:
    """Run a command from the repository root; its stdout (it must succeed)."""
    done = subprocess.run(
        args, cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def prefect_cli(env: dict[str, str], *args: str) -> str:
    """``prefect --no-prompt ARGS`` (``env``: its Prefect API and settings)."""
    return run_checked([str(BIN / "prefect"), "--no-prompt", *args], timeout=180, env=env)


def stop(*procs: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM each, then SIGKILL those still running after ``grace_s`` (a worker finishing a
    flow run on a loaded machine can take longer): none outlives the test."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
