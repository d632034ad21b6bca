"""The ``genai-ingest`` command line; ``genai_ingest.cli:app`` stays the entry point."""

from genai_ingest.cli.app import app

__all__ = ["app"]
