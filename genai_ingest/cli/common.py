"""What every ``genai-ingest`` command shares: the console, the common options, settings from
env/block/file/flags, the Prefect API for flows, and errors as one clear line."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from genai_ingest.config import RemoteEndpoint, Settings
from genai_ingest.failures.errors import IngestError

console = Console(stderr=True, soft_wrap=True)  # messages stay whole lines, not wrapped
#: Read as the ``--embedder`` key when set and no ``--embedder-api-key-env`` names another.
DEFAULT_API_KEY_ENV = "GENAI_INGEST_EMBEDDER_API_KEY"

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="state folder [env GENAI_INGEST_DATA_DIR; default ./.genai-ingest]"
    ),
]
StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Elasticsearch URL; default: the embedded store [env GENAI_INGEST_STORE_URL]",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="settings file (TOML or JSON)", exists=True, dir_okay=False),
]
JsonOut = Annotated[bool, typer.Option("--json", help="print JSON")]
SettingsBlock = Annotated[
    str | None,
    typer.Option(
        "--settings-block",
        help="name of a genai-ingest Settings block on the Prefect server (config and flags"
        " override it)",
    ),
]


def build_settings(
    data_dir: Path | None = None,
    store: str | None = None,
    config: Path | None = None,
    embedder: str | None = None,
    embedder_model: str | None = None,
    settings_block: str | None = None,
    embedder_api_key_env: str | None = None,
) -> Settings:
    """Settings from env, then the settings block, then the config file's top-level keys,
    then flags (flags win)."""
    values: dict[str, Any] = {}
    if settings_block is not None:
        from blocks import load_settings

        values = load_settings(settings_block).model_dump()
    if config is not None:
        text = config.read_text()
        values |= tomllib.loads(text) if config.suffix == ".toml" else json.loads(text)
    if data_dir is not None:
        values["data_dir"] = data_dir
    if store is not None:
        values["store_url"] = store
    if embedder is not None:
        model = embedder_model or values.get("embed", {}).get("model", "all-MiniLM-L6-v2")
        if embedder_api_key_env is None and os.environ.get(DEFAULT_API_KEY_ENV):
            embedder_api_key_env = DEFAULT_API_KEY_ENV
        endpoint = RemoteEndpoint(url=embedder, model=model, api_key_env=embedder_api_key_env)
        values["remote_embed"] = {**values.get("remote_embed", {}), "primary": endpoint}
    return Settings(**values)


@contextmanager
def flow_api(config: Path | None) -> Iterator[None]:
    """Flows and settings blocks need a Prefect API: the configured one, else the local
    server, started on first use (``genai_ingest.run.local_server``)."""
    from genai_ingest.run.local_server import prefect_api

    policy = build_settings(config=config).policies.local_server
    with prefect_api(policy, notify=lambda m: console.print(m, markup=False, highlight=False)):
        yield


def preflight(settings: Settings) -> None:
    """Open the runtime the flow will use (process-wide, so no work is repeated): a refused
    API key or another model's index is then one clear line, not a failed flow run."""
    from genai_ingest.run.runtime import runtime_for

    runtime_for(settings)


def block_api(settings_block: str | None, config: Path | None) -> AbstractContextManager[None]:
    """A Prefect API only when a settings block is to be loaded from it."""
    return flow_api(config) if settings_block else nullcontext()


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected errors into a clear message and exit code 2, not a traceback."""
    try:
        yield
    except IngestError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {escape(exc.reason)}")
        raise typer.Exit(2) from None
    except (ValueError, KeyError, FileNotFoundError) as exc:
        console.print(f"[red]error[/red]: {escape(str(exc))}")
        raise typer.Exit(2) from None


def quiet_prefect() -> None:
    """Quiet, offline defaults for commands that run flows or load the model."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@contextmanager
def progress_bar(enabled: bool, description: str = "ingesting") -> Iterator[None]:
    """A rich progress bar fed by the run's progress events (``run.progress``)."""
    from genai_ingest.run import progress

    if not enabled:
        yield
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task_id = bar.add_task(description, total=None)

        def listener(event: str, n: int) -> None:
            if event == "total":
                bar.update(task_id, total=n)
            else:
                bar.advance(task_id, n)

        progress.set_listener(listener)
        try:
            yield
        finally:
            progress.set_listener(None)
