"""What a reindex command did (``--json`` prints it), and a swap the gate refused."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ReindexReport:
    """What a reindex command did (``--json`` prints it)."""

    generation: str | None  # the generation built, swapped in or rolled back to
    live: str | None  # the live generation when the command finished
    model_id: str | None = None
    dimension: int | None = None
    previous: str | None = None  # the generation that stopped being live (swap, rollback)
    documents_parsed: int = 0  # always 0: chunks come from the store, not from the sources
    documents_copied: int = 0
    documents_stale: int = 0  # ledger rows the next run parses again
    chunks_read: int = 0
    chunks_embedded: int = 0  # chunks whose vectors were computed (not from the cache)
    chunks_pruned: int = 0  # chunks of the new generation the live one no longer has
    swapped: bool = False
    rolled_back: bool = False
    dropped: list[str] = field(default_factory=list)
    gate: dict[str, Any] | None = None
    refused: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GateRefused(Exception):
    """The new generation's retrieval quality is below the threshold: the alias stays."""

    def __init__(self, report: ReindexReport) -> None:
        super().__init__(report.refused)
        self.report = report
