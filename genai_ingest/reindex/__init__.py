"""``genai-ingest reindex``: a new model, encoder or schema without downtime.

The next generation of the index (``stores.generations``) is built **from the chunks already
stored** (``build``): no source is parsed, searches keep reading the live generation, and a
build killed at any point is resumed by running it again. ``swap`` makes it live behind a
retrieval-quality gate; ``rollback`` makes the previous generation live again;
``drop_previous`` deletes it. What a command did: ``report``."""

from genai_ingest.reindex.build import build_next
from genai_ingest.reindex.report import GateRefused, ReindexReport
from genai_ingest.reindex.swap import drop_previous, rollback, swap

__all__ = ["GateRefused", "ReindexReport", "build_next", "drop_previous", "rollback", "swap"]
