"""Office files generated for tests with LibreOffice (``soffice --convert-to``), including
formats with an explicit export filter, e.g. ``"xml:MS Word 2003 XML"``."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def soffice_convert(data: bytes, source_suffix: str, target: str) -> bytes:
    """``data`` (a ``.source_suffix`` file) converted by LibreOffice to ``target``: an
    extension, optionally with ``:<export filter>``."""
    suffix = target.split(":", 1)[0]
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / f"input.{source_suffix}"
        source.write_bytes(data)
        subprocess.run(
            [
                "soffice",
                f"-env:UserInstallation=file://{work}/profile",
                "--headless",
                "--convert-to",
                target,
                "--outdir",
                work,
                str(source),
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
        return (Path(work) / f"input.{suffix}").read_bytes()
