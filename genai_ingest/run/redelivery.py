"""Delayed retry of a run's outage failures: which of them to replay at the end of the run
(``policies.delayed_replay``), and waiting for the store to answer before doing so."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from genai_ingest.failures.errors import TransientError
from genai_ingest.failures.policies import DelayedReplayPolicy
from genai_ingest.run.runtime import Runtime


def outage_failures(failures: Iterable[dict[str, Any]], policy: DelayedReplayPolicy) -> list[str]:
    """Doc ids of a run's failures that an outage caused (``policy.error_classes``), when
    replaying them after the run is on."""
    if not policy.after_run:
        return []
    return sorted({f["doc_id"] for f in failures if f["error_class"] in policy.error_classes})


def wait_for_store(
    rt: Runtime,
    wait_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Probe the store (through its breaker: at most one probe per cool-down) until it takes
    writes again, for up to ``wait_s``; whether it did."""
    deadline = clock() + wait_s
    while True:
        try:
            rt.store_breaker.call(lambda: takes_writes(rt))
            return True
        except TransientError as exc:
            left = deadline - clock()
            if left <= 0:
                return False
            retry_after = exc.retry_after or rt.store_breaker.policy.cooldown_s
            sleep(min(max(retry_after, 0.1), left))


def takes_writes(rt: Runtime) -> None:
    """Succeeds only when the store takes writes: ``ensure_index`` of the identity it already
    has changes nothing, but needs the write lock (SQLite) or the index (Elasticsearch). A read
    would not do: a locked SQLite file still answers reads."""
    identity = rt.store.index_identity()
    if identity is not None:
        rt.store.ensure_index(*identity)
