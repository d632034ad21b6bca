"""Every retry, backoff, circuit-breaker and fallback policy in one place.

Policies are small frozen values, overridable from configuration (``Settings.policies``):

* ``RetryPolicy``: tenacity around one external call (download, embedding endpoint, store write):
  exponential backoff with jitter, capped at ``max_s``, honouring ``Retry-After``, bounded by
  ``attempts`` and a total time ``budget_s``. Only transient errors are retried.
* ``BreakerPolicy``: a circuit breaker per endpoint and per store
  (``genai_ingest.failures.resilience``);
  with ``pause_s`` (the store's), an open breaker pauses its callers, probing, instead of failing
  them, for up to ``pause_s`` per outage.
* ``DelayedReplayPolicy``: this run's transient failures replayed once at its end.
* ``TaskRetryPolicy``: Prefect task retries for batch-level tasks.
* ``ParseTimeoutPolicy``: after how many runs a document whose parse keeps timing out settles.

Which errors are retried inside one call (``is_retryable``): transient ones, except
``CircuitOpen`` (the breaker exists to fail fast: a fallback endpoint is tried, the store's
callers pause until a probe gets through, or the document goes to the DLQ as replayable) and
``PayloadTooLarge`` (the same batch fails the same way; it is split by
``resilience.embed_adaptive`` instead).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)
from tenacity.wait import wait_base

from genai_ingest.failures.errors import CircuitOpen, PayloadTooLarge, is_transient


def is_retryable(exc: BaseException) -> bool:
    """Transient errors worth retrying at once: not an open circuit, not an oversized batch."""
    return is_transient(exc) and not isinstance(exc, CircuitOpen | PayloadTooLarge)


class wait_retry_after_or_backoff(wait_base):
    """``initial_s * 2**(n-1) + uniform(0, jitter_s)``, raised to the error's ``retry_after``
    (the server's ``Retry-After``) when it has one, and capped at ``max_s``."""

    def __init__(self, initial_s: float, max_s: float, jitter_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter_s = jitter_s

    def backoff(self, attempt_number: int) -> float:
        """The exponential delay with jitter before retry number ``attempt_number``."""
        try:
            exponential = self.initial_s * 2 ** (attempt_number - 1)
        except OverflowError:
            exponential = self.max_s
        return exponential + random.uniform(0, self.jitter_s)

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = self.backoff(retry_state.attempt_number)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        return max(0.0, min(delay, self.max_s))


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter for one external call, bounded by attempts and time."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(5, ge=1)
    initial_s: float = Field(0.5, ge=0)
    max_s: float = Field(20.0, ge=0, description="cap on one delay, Retry-After included")
    jitter_s: float = Field(0.5, ge=0)
    budget_s: float = Field(
        120.0, gt=0, description="total time across attempts; no retry that would end past it"
    )

    def wait(self) -> wait_retry_after_or_backoff:
        """The tenacity wait strategy of this policy."""
        return wait_retry_after_or_backoff(self.initial_s, self.max_s, self.jitter_s)

    def retrying(
        self,
        retry_on: Callable[[BaseException], bool] = is_retryable,
        *,
        before_sleep: Callable[[RetryCallState], None] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> Retrying:
        """A tenacity ``Retrying`` that retries only what ``retry_on`` accepts.

        ``before_sleep`` sees each planned delay (``state.next_action.sleep``); ``sleep``
        replaces ``time.sleep`` (to measure or shorten the waits)."""
        extra: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
        return Retrying(
            stop=stop_after_attempt(self.attempts) | stop_before_delay(self.budget_s),
            wait=self.wait(),
            retry=retry_if_exception(retry_on),
            before_sleep=before_sleep,
            reraise=True,
            **extra,
        )


class BreakerPolicy(BaseModel):
    """Circuit breaker: open after ``failure_threshold`` consecutive transient failures, stay
    open ``cooldown_s``, then let one probe through (half-open).

    ``pause_s`` > 0: a call that meets the open breaker waits for it to close (a caller's call
    is the probe, one per ``cooldown_s``) and is then retried, instead of failing; up to
    ``pause_s`` after the breaker opened. Past that the outage counts as long: calls fail fast
    (transient, to the DLQ) until a probe gets through."""

    model_config = ConfigDict(frozen=True)

    failure_threshold: int = Field(5, ge=1)
    cooldown_s: float = Field(30.0, ge=0)
    pause_s: float = Field(0.0, ge=0, description="how long callers wait for an open breaker")


class TaskRetryPolicy(BaseModel):
    """Prefect task retries: exponential backoff, jitter, transient errors only."""

    model_config = ConfigDict(frozen=True)

    retries: int = Field(3, ge=0)
    backoff_factor_s: float = Field(2.0, ge=0)
    jitter_factor: float = Field(0.5, ge=0)

    def task_options(self) -> dict[str, Any]:
        """Keyword arguments for ``@task`` / ``Task.with_options``."""
        from prefect.tasks import exponential_backoff

        return {
            "retries": self.retries,
            "retry_delay_seconds": exponential_backoff(self.backoff_factor_s),
            "retry_jitter_factor": self.jitter_factor,
            "retry_condition_fn": retry_transient_only,
        }


def retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry when the task failed with a transient error."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


class ClaimPolicy(BaseModel):
    """Document claims of concurrent runs: a claim expires ``lease_s`` after it was taken or
    renewed (renewed every ``lease_s / 3`` while its worker lives); documents another live
    worker holds are re-checked every ``poll_s`` for up to ``wait_s``, and taken over once
    their claim expired."""

    model_config = ConfigDict(frozen=True)

    lease_s: float = Field(120.0, gt=0)
    poll_s: float = Field(5.0, gt=0)
    wait_s: float = Field(3600.0, ge=0)


class DelayedReplayPolicy(BaseModel):
    """Documents a run dead-lettered with one of ``error_classes`` (an outage, not the
    document) are replayed once at the end of that run, after waiting up to ``wait_s`` for the
    store to answer; the ``dlq-replay`` deployment's schedule replays what is still open."""

    model_config = ConfigDict(frozen=True)

    after_run: bool = True
    wait_s: float = Field(120.0, ge=0)
    error_classes: tuple[str, ...] = (
        "store_unavailable",
        "circuit_open",
        "endpoint_unavailable",
        "rate_limited",
    )


class LocalServerPolicy(BaseModel):
    """The local Prefect server the CLI starts when no Prefect API is configured: a cold
    start creates and migrates its database (well over 20 s on 2 cores)."""

    model_config = ConfigDict(frozen=True)

    startup_timeout_s: float = Field(300.0, gt=0)
    stop_timeout_s: float = Field(30.0, gt=0)


class ParseTimeoutPolicy(BaseModel):
    """A parse timeout is transient (a replay may find a less loaded machine), but the same
    bytes timing out on ``settle_after_runs`` runs fail for good: later runs skip them."""

    model_config = ConfigDict(frozen=True)

    settle_after_runs: int = Field(3, ge=1)


class Policies(BaseModel):
    download: RetryPolicy = RetryPolicy()
    embed_endpoint: RetryPolicy = RetryPolicy()
    store_write: RetryPolicy = RetryPolicy(attempts=6, initial_s=1.0, max_s=30.0, budget_s=180.0)
    embed_breaker: BreakerPolicy = BreakerPolicy(failure_threshold=10, cooldown_s=30.0)
    store_breaker: BreakerPolicy = BreakerPolicy(failure_threshold=3, cooldown_s=5.0, pause_s=120.0)
    task: TaskRetryPolicy = TaskRetryPolicy()
    claims: ClaimPolicy = ClaimPolicy()
    delayed_replay: DelayedReplayPolicy = DelayedReplayPolicy()
    local_server: LocalServerPolicy = LocalServerPolicy()
    parse_timeout: ParseTimeoutPolicy = ParseTimeoutPolicy()
