"""An injected fault for tests/test_shard.py: the real ``ingest-shard`` flow, except that the
run of shard 0 kills its own process (as an OOM-killed pod would) while ``crashes-left`` in
the data dir counts down from the number of crashes wanted."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow

from flows.shard import ShardSpec, ingest_shard
from genai_ingest.config import Settings

COUNTER = "crashes-left"


@flow(name="ingest-shard", persist_result=True)
def crashing_shard(
    sources: list[str],
    shard: ShardSpec,
    settings: Settings | None = None,
    settings_block: str | None = None,
) -> dict[str, Any]:
    assert settings is not None
    counter = settings.data_dir / COUNTER
    left = int(counter.read_text()) if counter.exists() else 0
    if shard.index == 0 and left > 0:
        counter.write_text(str(left - 1))
        os._exit(137)
    return ingest_shard.fn(sources, shard, settings, settings_block)
