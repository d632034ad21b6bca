"""Stopping the long-running processes a test starts (Prefect workers)."""

from __future__ import annotations

import subprocess


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
