"""What both marimo apps (DLQ triage, search explorer) do as they start."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genai_ingest.config import Settings


def settings_from_args(args: Mapping[str, Any]) -> Settings:
    """Settings from the environment (``GENAI_INGEST_*``), ``--data-dir`` taking precedence."""
    data_dir = args.get("data-dir") or args.get("data_dir")
    return Settings(data_dir=Path(str(data_dir))) if data_dir else Settings()


def keep_transformers_out_of_notebook_mode() -> None:
    """transformers takes any process that imported marimo for a Jupyter notebook and then
    needs IPython (not installed) to import its ``Trainer``, which sentence-transformers
    imports. These apps never train: tell it, before the embedding model is loaded."""
    import transformers.utils as transformers_utils
    from transformers.utils import import_utils

    import_utils.is_in_notebook = transformers_utils.is_in_notebook = lambda: False
