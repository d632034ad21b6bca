"""Resilience around external calls: a circuit breaker per endpoint and per store, tenacity
retries composed with it (with counters for the run report), and adaptive embedding batches.

The policies themselves (attempts, delays, thresholds) live in
``genai_ingest.failures.policies``."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np
from tenacity import RetryCallState

from genai_ingest.failures.errors import (
    CircuitOpen,
    EmbeddingRejected,
    IngestError,
    PayloadTooLarge,
    TransientError,
)
from genai_ingest.failures.policies import BreakerPolicy, RetryPolicy, is_retryable
from genai_ingest.failures.redact import redact

logger = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]


# --- circuit breaker -------------------------------------------------------------------------


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def counts_as_failure(exc: BaseException) -> bool:
    """A failure of the service itself; an oversized batch or a 4xx means it answered."""
    if isinstance(exc, PayloadTooLarge | CircuitOpen):
        return False
    return isinstance(exc, TransientError | TimeoutError | ConnectionError)


@dataclass
class BreakerCounters:
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    rejected: int = 0
    opened: int = 0
    probes: int = 0


#: How often a paused caller looks again while another caller's probe is in flight.
PROBE_POLL_S = 0.5


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures → half-open after
    ``cooldown_s``, where one probe call is let through → closed on its success, open again on
    its failure. While open (or while the probe runs) calls fail fast with ``CircuitOpen``,
    a transient error whose ``retry_after`` is the time left in the cool-down. An outage lasts
    from the first opening to the next closing; ``pause_for`` says how long a caller may wait
    for it to end (``policy.pause_s``). Thread-safe."""

    def __init__(self, name: str, policy: BreakerPolicy, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.policy = policy
        self.counters = BreakerCounters()
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._outage_since: float | None = None
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current_state()

    def _current_state(self) -> BreakerState:
        cooled = self._clock() - self._opened_at >= self.policy.cooldown_s
        if self._state is BreakerState.OPEN and cooled:
            self._state = BreakerState.HALF_OPEN
        return self._state

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` through the breaker; raises ``CircuitOpen`` without calling it when open."""
        is_probe = self._admit()
        try:
            result = fn()
        except Exception as exc:
            self._settle(is_probe, failed=counts_as_failure(exc))
            raise
        except BaseException:  # interrupted: no verdict on the service
            self._release_probe(is_probe)
            raise
        self._settle(is_probe, failed=False)
        return result

    def _admit(self) -> bool:
        """Let a call through or raise ``CircuitOpen``; True when the call is the probe."""
        with self._lock:
            state = self._current_state()
            if state is BreakerState.CLOSED:
                return False
            if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                self.counters.probes += 1
                return True
            self.counters.rejected += 1
            wait = max(0.0, self._opened_at + self.policy.cooldown_s - self._clock())
        raise CircuitOpen(
            f"circuit '{self.name}' is {state.value}; retry in {wait:.1f}s", retry_after=wait
        )

    def _release_probe(self, is_probe: bool) -> None:
        if is_probe:
            with self._lock:
                self._probe_in_flight = False

    def _settle(self, is_probe: bool, *, failed: bool) -> None:
        with self._lock:
            if is_probe:
                self._probe_in_flight = False
            if failed:
                self._record_failure(is_probe)
            else:
                self.counters.successes += 1
                self.counters.consecutive_failures = 0
                if is_probe:
                    self._state = BreakerState.CLOSED
                    self._outage_since = None
                    logger.info("circuit %s closed after a successful probe", self.name)

    def _record_failure(self, is_probe: bool) -> None:
        self.counters.failures += 1
        self.counters.consecutive_failures += 1
        threshold_hit = self.counters.consecutive_failures >= self.policy.failure_threshold
        if is_probe or (self._state is BreakerState.CLOSED and threshold_hit):
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            if self._outage_since is None:
                self._outage_since = self._opened_at
            self.counters.opened += 1
            logger.warning(
                "circuit %s opened after %d consecutive failures; cool-down %.1fs",
                self.name,
                self.counters.consecutive_failures,
                self.policy.cooldown_s,
            )

    def pause_for(self, exc: BaseException) -> float | None:
        """How long a caller whose call failed with ``exc`` waits before calling again, or
        None when it fails instead: the service answered, the breaker is closed or does not
        pause (``pause_s`` 0), or this outage has lasted ``pause_s`` already."""
        if self.policy.pause_s <= 0 or not (isinstance(exc, CircuitOpen) or counts_as_failure(exc)):
            return None
        with self._lock:
            state = self._current_state()
            if state is BreakerState.CLOSED or self._outage_since is None:
                return None
            now = self._clock()
            left = self._outage_since + self.policy.pause_s - now
            if left <= 0:
                return None
            if state is BreakerState.OPEN:
                wait = max(self._opened_at + self.policy.cooldown_s - now, 0.0)
            else:
                wait = PROBE_POLL_S if self._probe_in_flight else 0.0
            return min(wait, left)


_breakers: dict[tuple[str, str], CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(name: str, policy: BreakerPolicy) -> CircuitBreaker:
    """The process's one breaker for ``name`` (e.g. ``embed:<url>``, ``store:<url>``) and
    ``policy``: created on first use, shared afterwards."""
    key = (name, policy.model_dump_json())
    with _breakers_lock:
        if key not in _breakers:
            _breakers[key] = CircuitBreaker(name, policy)
        return _breakers[key]


# --- retries ---------------------------------------------------------------------------------


@dataclass
class RetryStats:
    """What retrying cost, for the run report. Thread-safe; share one per run."""

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    gave_up: int = 0
    slept_s: float = 0.0
    pauses: int = 0
    paused_s: float = 0.0
    delays: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    errors: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **increments: float) -> None:
        """Add to the numeric counters, e.g. ``add(retries=1)``."""
        with self._lock:
            for name, amount in increments.items():
                setattr(self, name, getattr(self, name) + amount)

    def record_error(self, exc: BaseException) -> None:
        with self._lock:
            self.errors[getattr(exc, "code", type(exc).__name__)] += 1

    def record_delay(self, delay: float) -> None:
        with self._lock:
            self.delays.append(delay)
            self.retries += 1

    def summary(self) -> dict[str, Any]:
        """Plain numbers for a closing note or a Prefect artifact."""
        with self._lock:
            return {
                "calls": self.calls,
                "attempts": self.attempts,
                "retries": self.retries,
                "gave_up": self.gave_up,
                "slept_s": round(self.slept_s, 3),
                "pauses": self.pauses,
                "paused_s": round(self.paused_s, 3),
                "errors": dict(self.errors),
            }


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    breaker: CircuitBreaker | None = None,
    *,
    stats: RetryStats | None = None,
    on_retry: Callable[[RetryCallState], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()`` with tenacity retries per ``policy``, each attempt through ``breaker``.

    An open circuit is not retried: ``CircuitOpen`` surfaces at once, and the failure that
    opens the breaker is not followed by a pointless wait; unless the breaker pauses its
    callers (``BreakerPolicy.pause_s``): then the call waits for the outage to end, probing
    once per cool-down, and starts over, until the pause is spent. ``on_retry`` sees each
    retry's state (``state.next_action.sleep`` is the planned delay). ``stats`` receives the
    attempts, retries, planned delays, pauses and the time actually slept."""
    stats = stats if stats is not None else RetryStats()
    label = breaker.name if breaker else getattr(fn, "__qualname__", "call")
    stats.add(calls=1)

    def attempt() -> T:
        stats.add(attempts=1)
        try:
            return breaker.call(fn) if breaker else fn()
        except Exception as exc:
            stats.record_error(exc)
            raise

    def before_sleep(state: RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action else 0.0
        stats.record_delay(delay)
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            label,
            state.attempt_number,
            redact(str(exc)),
            delay,
        )
        if on_retry is not None:
            on_retry(state)

    def timed_sleep(delay: float) -> None:
        started = time.perf_counter()
        sleep(delay)
        stats.add(slept_s=time.perf_counter() - started)

    def should_retry(exc: BaseException) -> bool:
        tripped = breaker is not None and breaker.state is BreakerState.OPEN
        return is_retryable(exc) and not tripped

    retrying = policy.retrying(should_retry, before_sleep=before_sleep, sleep=timed_sleep)
    while True:
        try:
            return retrying(attempt)
        except Exception as exc:
            wait = breaker.pause_for(exc) if breaker is not None else None
            if wait is None:
                stats.add(gave_up=1)
                raise
            started = time.perf_counter()
            sleep(wait)
            stats.add(pauses=1, paused_s=time.perf_counter() - started)


# --- adaptive batches ------------------------------------------------------------------------

SPLIT_ON: tuple[type[IngestError], ...] = (PayloadTooLarge, EmbeddingRejected)


@dataclass
class AdaptiveResult:
    """Vectors for the items that were embedded and an error for each item that was not, both
    keyed by the item's position in the input."""

    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    errors: dict[int, IngestError] = field(default_factory=dict)
    calls: int = 0
    splits: int = 0


def embed_adaptive(
    embed_fn: Callable[[Sequence[str]], np.ndarray],
    texts: Sequence[str],
    *,
    split_on: tuple[type[IngestError], ...] = SPLIT_ON,
) -> AdaptiveResult:
    """Embed ``texts``; a batch failing with ``split_on`` (OOM, HTTP 413, an input the endpoint
    rejects) is split in halves, recursively, down to single items. Any other classified
    error fails its (sub-)batch's items. Never raises an ``IngestError``: items that still fail
    are in ``errors`` for the caller to send to the DLQ."""
    result = AdaptiveResult()
    _embed_part(embed_fn, texts, list(range(len(texts))), split_on, result)
    return result


def _embed_part(
    embed_fn: Callable[[Sequence[str]], np.ndarray],
    texts: Sequence[str],
    positions: list[int],
    split_on: tuple[type[IngestError], ...],
    result: AdaptiveResult,
) -> None:
    if not positions:
        return
    result.calls += 1
    try:
        vectors = embed_fn([texts[i] for i in positions])
    except IngestError as exc:
        if isinstance(exc, split_on) and len(positions) > 1:
            result.splits += 1
            middle = len(positions) // 2
            logger.info("%s: splitting a batch of %d", exc.code, len(positions))
            _embed_part(embed_fn, texts, positions[:middle], split_on, result)
            _embed_part(embed_fn, texts, positions[middle:], split_on, result)
            return
        result.errors.update(dict.fromkeys(positions, exc))
        return
    result.vectors.update(zip(positions, vectors, strict=True))
