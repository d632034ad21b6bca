"""The local Prefect server's guards, without starting one (``test_first_run`` starts it):
a configured API wins, a port held by another program is a clear error, a stale or recycled
pid is never signalled."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from genai_ingest.failures.errors import SystemFault
from genai_ingest.failures.policies import LocalServerPolicy
from genai_ingest.run.local_server import LocalServer, prefect_api

QUICK = LocalServerPolicy(startup_timeout_s=5, stop_timeout_s=2)


def test_a_configured_api_url_wins_and_nothing_starts(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    messages: list[str] = []
    configured = "http://127.0.0.1:9/api"
    with (
        temporary_settings(updates={PREFECT_API_URL: configured, PREFECT_HOME: str(tmp_path)}),
        prefect_api(QUICK, messages.append) as url,
    ):
        assert url == configured
    assert messages == []
    assert not (tmp_path / "server.pid").exists()


def test_a_port_held_by_another_program_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        server = LocalServer("127.0.0.1", other.getsockname()[1], tmp_path)
        with pytest.raises(SystemFault) as caught:
            server.ensure_running(QUICK, lambda _: None)
    assert "PREFECT_SERVER_API_PORT" in caught.value.reason
    assert "PREFECT_API_URL" in caught.value.reason
    assert not server.pid_file.exists()


def test_a_stale_or_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    server = LocalServer("127.0.0.1", 1, tmp_path)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    server.pid_file.write_text(str(finished.pid))
    assert server.pid() is None

    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server.pid_file.write_text(str(unrelated.pid))  # e.g. a pid reused after a reboot
        assert server.pid() is None
        assert server.stop(QUICK) is None
        assert unrelated.poll() is None, "an unrelated process was signalled"
        assert not server.pid_file.exists()
    finally:
        unrelated.kill()
        unrelated.wait()
