"""``genai-ingest server start|stop|status``: the local Prefect server the CLI runs flows on
when no ``PREFECT_API_URL`` is configured (see ``genai_ingest.run.local_server``)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from genai_ingest.failures.errors import IngestError
from genai_ingest.failures.policies import Policies

server_app = typer.Typer(
    help="The local Prefect server that runs the CLI's flows when PREFECT_API_URL is not set"
    " (started on first use; its UI shows every run).",
    no_args_is_help=True,
)
console = Console(stderr=True, highlight=False, soft_wrap=True)


def _notify(message: str) -> None:
    console.print(message, markup=False)


def _policy() -> Policies:
    from genai_ingest.config import Settings

    return Settings().policies


@server_app.command("start")
def start() -> None:
    """Start the local server now (a `run` starts it by itself when needed)."""
    from genai_ingest.run.local_server import LocalServer, configured_api_url

    configured = configured_api_url()
    if configured:
        _notify(f"PREFECT_API_URL is set: commands use {configured}; nothing to start")
        return
    server = LocalServer.from_prefect_settings()
    try:
        started = server.ensure_running(_policy().local_server, _notify)
    except IngestError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {escape(exc.reason)}")
        raise typer.Exit(2) from None
    if not started:
        _notify(f"the local Prefect server is running: UI at {server.url}")


@server_app.command("stop")
def stop() -> None:
    """Stop the local server (runs and their history stay in its database)."""
    from genai_ingest.run.local_server import LocalServer

    pid = LocalServer.from_prefect_settings().stop(_policy().local_server)
    _notify(f"stopped the local Prefect server (pid {pid})" if pid else "no local server running")


@server_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Whether the local server runs, where, and which API the CLI uses. Exit 1 when the CLI
    would have to start it."""
    from genai_ingest.run.local_server import LocalServer, configured_api_url

    info = {
        "configured_api_url": configured_api_url(),
        **LocalServer.from_prefect_settings().status(),
    }
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
    else:
        for key, value in info.items():
            _notify(f"{key}: {value}")
    if not (info["running"] or info["configured_api_url"]):
        raise typer.Exit(1)
