"""A local spool for failures the DLQ could not take (its store was down): nothing is lost.
Spooled failures move into the DLQ at the start of the next run or replay."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from genai_ingest.failures.dlq import DeadLetterQueue, Failure


class FailureSpool:
    """``<data_dir>/dlq-spool/<doc_id>.json`` (+ ``.raw``): one pending failure per document."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "dlq-spool"

    def put(self, failure: Failure, raw: bytes | None) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{failure.doc_id}.json"
        if raw is not None:
            _write_atomic(path.with_suffix(".raw"), raw)
        data = {**asdict(failure), "at": failure.at.isoformat(), "has_raw": raw is not None}
        _write_atomic(path, json.dumps(data).encode())
        return path

    def pending(self) -> list[Path]:
        return sorted(self.folder.glob("*.json")) if self.folder.exists() else []

    def drain(self, dlq: DeadLetterQueue) -> int:
        """Move every spooled failure into ``dlq``; returns how many moved."""
        moved = 0
        for path in self.pending():
            data = json.loads(path.read_text())
            raw_path = path.with_suffix(".raw")
            raw = raw_path.read_bytes() if data.pop("has_raw") else None
            dlq.put(Failure(**{**data, "at": datetime.fromisoformat(data["at"])}), raw)
            raw_path.unlink(missing_ok=True)
            path.unlink()
            moved += 1
        return moved


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
