"""The local Prefect server that ``genai-ingest`` uses when no Prefect API is configured.

Prefect flows report to an API. With no ``PREFECT_API_URL``, Prefect itself would start a
temporary ("ephemeral") server inside every command: seconds of start-up each time, and on a
fresh machine its database migration outlasts Prefect's 20 s start-up timeout. Instead, the CLI
starts Prefect's own server (``prefect server start``) once, detached, and reuses it:

- it waits with a timeout sized for a cold database (``policies.local_server``) and says so;
- the pid goes to Prefect's ``server.pid``, so ``prefect server stop`` stops it too; its
  output goes to ``genai-ingest-server.log`` next to it (both in ``PREFECT_HOME``);
- a file lock makes concurrent first runs start one server, not several;
- later runs find it healthy and use it: every CLI run shows up in its UI.

A configured API (``PREFECT_API_URL`` in the environment or the Prefect profile) always wins:
nothing is started then. Host and port are Prefect's ``PREFECT_SERVER_API_HOST`` and
``PREFECT_SERVER_API_PORT`` (127.0.0.1:4200 by default).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from genai_ingest.failures.errors import SystemFault
from genai_ingest.failures.policies import LocalServerPolicy

PID_FILE = "server.pid"  # Prefect's own name: ``prefect server stop`` reads it
LOG_FILE = "genai-ingest-server.log"
LOCK_FILE = "genai-ingest-server.lock"
DATABASE_FILE = "prefect.db"  # Prefect's default SQLite database in PREFECT_HOME

Notify = Callable[[str], None]


def configured_api_url() -> str | None:
    """The Prefect API the user configured (environment, profile), if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


@dataclass(frozen=True)
class LocalServer:
    """Prefect's server on this machine, for ``home`` (``PREFECT_HOME``)."""

    host: str
    port: int
    home: Path

    @classmethod
    def from_prefect_settings(cls) -> LocalServer:
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        return cls(settings.server.api.host, settings.server.api.port, Path(settings.home))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def pid_file(self) -> Path:
        return self.home / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.home / LOG_FILE

    def pid(self) -> int | None:
        """The live server process recorded in the pid file (a stale file is ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_prefect_process(pid) else None

    def healthy(self, timeout_s: float = 2.0) -> bool:
        """Whether a Prefect API answers its health check at ``api_url``."""
        try:
            response = httpx.get(f"{self.api_url}/health", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.text.strip() == "true"

    def version(self) -> str | None:
        try:
            response = httpx.get(f"{self.api_url}/admin/version", timeout=2.0)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def ensure_running(self, policy: LocalServerPolicy, notify: Notify) -> bool:
        """Start the server unless one answers already; True when this call started it."""
        if self.healthy():
            return False
        self.home.mkdir(parents=True, exist_ok=True)
        with _locked(self.home / LOCK_FILE):
            if self.healthy():  # another command started it meanwhile
                return False
            pid = self.pid()
            if pid is not None:  # starting (another command's) or hung: give it its time
                notify(f"waiting for the local Prefect server at {self.url} (pid {pid}) ...")
                self._wait_healthy(pid, policy.startup_timeout_s)
                return False
            self._start(policy, notify)
            return True

    def _start(self, policy: LocalServerPolicy, notify: Notify) -> None:
        if _port_in_use(self.host, self.port):
            raise SystemFault(
                f"port {self.port} on {self.host} is in use by something that is not a Prefect"
                " server; set PREFECT_SERVER_API_PORT to a free port, or PREFECT_API_URL to a"
                " running Prefect server"
            )
        cold = not (self.home / DATABASE_FILE).exists()
        notify(
            f"starting a local Prefect server at {self.url}"
            + (" (first run: creating its database, up to a minute) ..." if cold else " ...")
        )
        started = time.monotonic()
        with self.log_file.open("wb") as log:
            process = subprocess.Popen(
                [*_prefect_command(), "server", "start", "--host", self.host],
                env=_server_env(self.port),
                cwd=self.home,  # not the user's working directory
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not stopped by the terminal's Ctrl-C
            )
        self.pid_file.write_text(str(process.pid))
        try:
            self._wait_healthy(process.pid, policy.startup_timeout_s, process)
        except SystemFault:
            _terminate(process.pid, policy.stop_timeout_s)
            self.pid_file.unlink(missing_ok=True)
            raise
        notify(
            f"local Prefect server ready in {time.monotonic() - started:.0f} s: UI at {self.url},"
            " runs show up there; `genai-ingest server stop` stops it"
        )

    def _wait_healthy(
        self, pid: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.healthy():
                return
            exited = process.poll() is not None if process else not _is_prefect_process(pid)
            if exited:
                raise SystemFault(
                    f"the local Prefect server exited while starting; {self.log_file}:\n"
                    + self.log_tail()
                )
            time.sleep(0.5)
        raise SystemFault(
            f"the local Prefect server (pid {pid}) did not answer within {timeout_s:.0f} s"
            " (policies.local_server.startup_timeout_s, env"
            " GENAI_INGEST_POLICIES__LOCAL_SERVER__STARTUP_TIMEOUT_S; `genai-ingest server stop`"
            f" ends a hung one); {self.log_file}:\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, policy: LocalServerPolicy) -> int | None:
        """Stop the server started for this ``PREFECT_HOME``; its pid, or None if none ran."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is not None:
            _terminate(pid, policy.stop_timeout_s)
        return pid

    def status(self) -> dict[str, Any]:
        healthy = self.healthy()
        return {
            "running": healthy,
            "url": self.url,
            "api_url": self.api_url,
            "pid": self.pid(),
            "version": self.version() if healthy else None,
            "prefect_home": str(self.home),
            "log": str(self.log_file),
        }


@contextlib.contextmanager
def prefect_api(policy: LocalServerPolicy, notify: Notify) -> Iterator[str]:
    """Run the body against the configured Prefect API, else the local server (started on
    first use). Yields the API URL."""
    configured = configured_api_url()
    if configured:
        yield configured
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = LocalServer.from_prefect_settings()
    server.ensure_running(policy, notify)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server.api_url


def _prefect_command() -> list[str]:
    """``prefect`` of this interpreter's environment."""
    script = Path(sys.executable).parent / "prefect"
    return [str(script)] if script.exists() else [sys.executable, "-m", "prefect"]


def _server_env(port: int) -> dict[str, str]:
    env = {**os.environ, "PREFECT_SERVER_API_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    return env


def _is_prefect_process(pid: int) -> bool:
    """A live process that is a Prefect server (guards against a recycled pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():  # no procfs (macOS): trust the pid
        return True
    try:
        return b"prefect" in cmdline.read_bytes()
    except OSError:
        return False


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _is_prefect_process(pid):
                _reap(pid)
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect our own child's exit status (no zombie); other processes are not ours."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
