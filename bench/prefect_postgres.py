"""A throwaway PostgreSQL cluster for a bench's Prefect server (the database Prefect recommends
for production; SQLite answers 503 under many concurrent clients).

``start_postgres(port)`` runs ``initdb`` in a new temporary folder (as the ``postgres`` user
when this process is root: PostgreSQL refuses root), starts it on 127.0.0.1:``port`` and returns
the folder and the URL to put in ``PREFECT_SERVER_DATABASE_CONNECTION_URL``;
``stop_postgres(folder)`` stops it and deletes the folder. Needs PostgreSQL's server binaries
(Debian: ``postgresql``)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None
    )
    if found is None:
        raise SystemExit(
            f"--postgres needs PostgreSQL's {name} (Debian: apt-get install postgresql)"
        )
    return found


def _as_owner(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


def _run(*args: str) -> None:
    subprocess.run(_as_owner(*args), check=True, capture_output=True)


def start_postgres(port: int) -> tuple[Path, str]:
    """A new cluster: its folder and URL (database ``prefect``, trust on loopback)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    _run(_bin("initdb"), "-D", str(data), "-U", "prefect", "--auth=trust", "-E", "UTF8")
    options = (
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
    )
    _run(_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w", "start")
    _run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "prefect")
    return folder, f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"


def stop_postgres(folder: Path) -> None:
    """Stop the cluster in ``folder``, delete it."""
    subprocess.run(
        _as_owner(_bin("pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "stop"),
        capture_output=True,
    )
    shutil.rmtree(folder, ignore_errors=True)
