"""Retries, circuit breaker and adaptive batches, against a real HTTP embedding server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fault_server import Faults, FaultServer, FaultServers, fault_servers

from genai_ingest.config import RemoteEndpoint
from genai_ingest.embed.local import LocalEmbedder
from genai_ingest.embed.remote import RemoteEmbedder
from genai_ingest.failures.errors import (
    CircuitOpen,
    EndpointUnavailable,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
)
from genai_ingest.failures.policies import BreakerPolicy, RetryPolicy
from genai_ingest.failures.resilience import (
    BreakerState,
    CircuitBreaker,
    RetryStats,
    breaker_for,
    call_with_retry,
    embed_adaptive,
)

MODEL = "all-MiniLM-L6-v2"
FAST = RetryPolicy(attempts=6, initial_s=0.02, max_s=1.0, jitter_s=0.01, budget_s=20)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def servers(local_embedder: LocalEmbedder) -> Iterator[FaultServers]:
    with fault_servers(local_embedder) as started:
        yield started


def remote(
    server: FaultServer,
    policy: RetryPolicy = FAST,
    breaker: CircuitBreaker | None = None,
    stats: RetryStats | None = None,
    **endpoint: object,
) -> RemoteEmbedder:
    settings = {"url": server.url, "model": MODEL, "timeout_s": 5.0, **endpoint}
    breaker = breaker or CircuitBreaker(server.url, BreakerPolicy(failure_threshold=50))
    return RemoteEmbedder(RemoteEndpoint(**settings), policy, breaker=breaker, stats=stats)


def texts_of(count: int) -> list[str]:
    return [f"Passage {i}: notes on subject {i % 11}, revision {i // 11}." for i in range(count)]


def assert_same_as_local(servers: FaultServers, texts: list[str], vectors: np.ndarray) -> None:
    expected = servers.embedder.embed(texts)
    assert vectors.shape == expected.shape
    assert (np.sum(vectors * expected, axis=1) > 0.999).all()


class RecordingSleep:
    """Real sleeps, measured."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        started = time.perf_counter()
        time.sleep(seconds)
        self.slept.append(time.perf_counter() - started)


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_delays_grow_and_are_jittered(servers: FaultServers) -> None:
    server = servers.start(faults=Faults(fail_first=5, retry_after=None))
    stats, sleep = RetryStats(), RecordingSleep()
    planned: list[float] = []
    embedder = remote(server, stats=stats)

    vectors = call_with_retry(
        lambda: embedder._post(["hello"]),
        FAST,
        stats=stats,
        sleep=sleep,
        on_retry=lambda state: planned.append(state.next_action.sleep),
    )

    assert vectors.shape == (1, 384)
    assert server.counts["requests"] == 6
    assert stats.retries == 5 and stats.errors == {"endpoint_unavailable": 5}
    bases = [FAST.initial_s * 2**n for n in range(5)]
    jitter = [delay - base for delay, base in zip(planned, bases, strict=True)]
    assert all(0 <= j <= FAST.jitter_s for j in jitter)
    assert len(set(jitter)) == 5, "every delay has its own jitter"
    assert planned == sorted(planned) and planned[-1] > 4 * planned[0]
    assert list(stats.delays) == planned
    assert all(real >= want for real, want in zip(sleep.slept, planned, strict=True))
    assert stats.slept_s == pytest.approx(sum(sleep.slept), abs=0.01)


def test_retry_after_is_honoured(servers: FaultServers) -> None:
    server = servers.start(faults=Faults(rate_limited=1.0, retry_after="1"))
    sleep = RecordingSleep()
    policy = RetryPolicy(attempts=2, initial_s=0.01, max_s=5, jitter_s=0.01)
    embedder = remote(server, policy)

    with pytest.raises(RateLimited) as caught:
        call_with_retry(lambda: embedder._post(["x"]), policy, sleep=sleep)

    assert caught.value.retry_after == 1.0
    assert server.counts["rate_limited"] == 2
    assert len(sleep.slept) == 1 and sleep.slept[0] >= 1.0


def test_retry_after_is_capped_and_budget_bounds_the_wait(servers: FaultServers) -> None:
    server = servers.start(faults=Faults(rate_limited=1.0, retry_after="30"))
    capped = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05, jitter_s=0)
    stats = RetryStats()
    with pytest.raises(RateLimited):
        call_with_retry(lambda: remote(server)._post(["x"]), capped, stats=stats)
    assert list(stats.delays) == [0.05, 0.05]

    tight_budget = RetryPolicy(attempts=5, initial_s=0.01, max_s=60, budget_s=1.0)
    stats = RetryStats()
    with pytest.raises(RateLimited):
        call_with_retry(lambda: remote(server)._post(["x"]), tight_budget, stats=stats)
    assert stats.attempts == 1 and stats.slept_s == 0, "a wait past the budget is not started"


# --- circuit breaker -------------------------------------------------------------------------


def test_breaker_opens_rejects_fast_half_opens_and_closes(servers: FaultServers) -> None:
    server = servers.start(faults=Faults(outage=True))
    clock = FakeClock()
    breaker = CircuitBreaker("embed:test", BreakerPolicy(failure_threshold=3, cooldown_s=10), clock)
    embedder = remote(server, RetryPolicy(attempts=1), breaker)

    for _ in range(3):
        with pytest.raises(EndpointUnavailable):
            embedder.embed(["x"])
    assert breaker.state is BreakerState.OPEN
    started = time.perf_counter()
    with pytest.raises(CircuitOpen) as caught:
        embedder.embed(["x"])
    assert time.perf_counter() - started < 0.05
    assert caught.value.retry_after == 10 and caught.value.replayable
    assert server.counts["requests"] == 3, "an open circuit sends nothing"

    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(EndpointUnavailable):
        embedder.embed(["x"])  # the probe fails: open again
    assert breaker.state is BreakerState.OPEN and server.counts["requests"] == 4

    clock.advance(10)
    server.faults.outage = False
    assert embedder.embed(["x"]).shape == (1, 384)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.counters.opened == 2 and breaker.counters.probes == 2
    assert breaker.counters.rejected == 1


def test_open_circuit_stops_the_retries(servers: FaultServers) -> None:
    server = servers.start(faults=Faults(outage=True))
    breaker = CircuitBreaker("embed:retry", BreakerPolicy(failure_threshold=3, cooldown_s=60))
    stats = RetryStats()
    embedder = remote(server, FAST, breaker, stats)

    with pytest.raises(EndpointUnavailable):
        embedder.embed(["x"])
    assert breaker.state is BreakerState.OPEN
    assert server.counts["requests"] == 3 and stats.retries == 2, "no wait once it opened"

    with pytest.raises(CircuitOpen):
        embedder.embed(["x"])
    assert server.counts["requests"] == 3 and stats.errors["circuit_open"] == 1


def test_half_open_lets_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("probe", BreakerPolicy(failure_threshold=1, cooldown_s=5), clock)
    with pytest.raises(EndpointUnavailable):
        breaker.call(_fail)
    clock.advance(5)
    probe_running, release = threading.Event(), threading.Event()

    def slow_probe() -> str:
        probe_running.set()
        release.wait(5)
        return "ok"

    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(breaker.call, slow_probe)
        probe_running.wait(5)
        with pytest.raises(CircuitOpen):
            breaker.call(lambda: "second caller")
        release.set()
        assert probe.result() == "ok"
    assert breaker.state is BreakerState.CLOSED
    assert breaker.call(lambda: "after") == "after"


def _fail() -> None:
    raise EndpointUnavailable("down")


def test_one_breaker_per_name_and_policy() -> None:
    policy = BreakerPolicy(failure_threshold=2)
    assert breaker_for("store:a", policy) is breaker_for("store:a", policy)
    assert breaker_for("store:a", policy) is not breaker_for("store:b", policy)
    assert breaker_for("store:a", policy) is not breaker_for("store:a", BreakerPolicy())


# --- pausing for an open store breaker -------------------------------------------------------

QUICK_STORE = RetryPolicy(attempts=3, initial_s=0.1, max_s=0.5, jitter_s=0.0, budget_s=2)


class Store:
    """A store call that fails (injected fault) until the fake clock reaches ``up_at``."""

    def __init__(self, clock: FakeClock, down_for_s: float) -> None:
        self.clock, self.up_at, self.calls = clock, clock.now + down_for_s, 0

    def write(self) -> str:
        self.calls += 1
        if self.clock.now < self.up_at:
            raise StoreUnavailable("connection refused")
        return "written"


def test_an_open_store_breaker_pauses_the_call_until_a_probe_gets_through() -> None:
    clock = FakeClock()
    policy = BreakerPolicy(failure_threshold=3, cooldown_s=5, pause_s=120)
    breaker = CircuitBreaker("store:pause", policy, clock)
    store, stats = Store(clock, down_for_s=20), RetryStats()

    started = clock.now
    assert call_with_retry(store.write, QUICK_STORE, breaker, stats=stats, sleep=clock.advance) == (
        "written"
    )
    assert breaker.state is BreakerState.CLOSED
    assert 20 <= clock.now - started <= 20 + policy.cooldown_s + 1
    assert stats.pauses > 0 and stats.gave_up == 0
    # the threshold's failures, then one probe per cool-down: no hammering while paused
    assert store.calls <= policy.failure_threshold + 20 / policy.cooldown_s + 2


def test_a_pause_is_bounded_then_calls_fail_fast_until_a_probe_gets_through() -> None:
    clock = FakeClock()
    policy = BreakerPolicy(failure_threshold=3, cooldown_s=5, pause_s=30)
    breaker = CircuitBreaker("store:bounded", policy, clock)
    store, stats = Store(clock, down_for_s=3600), RetryStats()

    started = clock.now
    with pytest.raises((StoreUnavailable, CircuitOpen)):
        call_with_retry(store.write, QUICK_STORE, breaker, stats=stats, sleep=clock.advance)
    assert policy.pause_s <= clock.now - started <= policy.pause_s + 1
    assert stats.gave_up == 1

    slept_before = clock.now
    with pytest.raises((StoreUnavailable, CircuitOpen)):  # past the bound: no second pause
        call_with_retry(store.write, QUICK_STORE, breaker, stats=stats, sleep=clock.advance)
    assert clock.now - slept_before < 1

    store.up_at = clock.now  # the store is back: the next probe closes the breaker
    clock.advance(policy.cooldown_s)
    assert call_with_retry(store.write, QUICK_STORE, breaker, stats=stats, sleep=clock.advance) == (
        "written"
    )
    assert breaker.state is BreakerState.CLOSED

    store.up_at = clock.now + 10  # a new outage gets a new pause
    assert call_with_retry(store.write, QUICK_STORE, breaker, stats=stats, sleep=clock.advance) == (
        "written"
    )


def test_a_breaker_without_pause_and_answers_of_the_service_do_not_pause() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("store:nopause", BreakerPolicy(failure_threshold=1), clock)
    with pytest.raises(StoreUnavailable):
        breaker.call(Store(clock, 60).write)
    assert breaker.pause_for(CircuitOpen("open")) is None
    paused = CircuitBreaker("store:paused", BreakerPolicy(failure_threshold=1, pause_s=60), clock)
    with pytest.raises(StoreUnavailable):
        paused.call(Store(clock, 60).write)
    assert paused.pause_for(PayloadTooLarge("413")) is None
    assert paused.pause_for(CircuitOpen("open")) is not None


def test_payload_errors_do_not_trip_the_breaker() -> None:
    breaker = CircuitBreaker("payload", BreakerPolicy(failure_threshold=1))

    def too_large() -> None:
        raise PayloadTooLarge("413")

    for _ in range(3):
        with pytest.raises(PayloadTooLarge):
            breaker.call(too_large)
    assert breaker.state is BreakerState.CLOSED


# --- adaptive batches ------------------------------------------------------------------------


def test_adaptive_batches_split_until_accepted(servers: FaultServers) -> None:
    server = servers.start(faults=Faults(max_items=4))
    texts = texts_of(20)

    result = embed_adaptive(remote(server, max_batch=16).embed, texts)

    assert not result.errors and result.splits > 0
    vectors = np.stack([result.vectors[i] for i in range(len(texts))])
    assert_same_as_local(servers, texts, vectors)
    assert server.counts["too_large"] > 0


def test_item_that_always_fails_is_reported_alone(servers: FaultServers) -> None:
    servers_poison = servers.start(faults=Faults(poison="POISON"))
    texts = texts_of(9)
    texts[6] = "POISON " * 50

    result = embed_adaptive(remote(servers_poison, max_batch=16).embed, texts)

    assert list(result.errors) == [6]
    assert isinstance(result.errors[6], PayloadTooLarge) and result.errors[6].replayable
    assert sorted(result.vectors) == [0, 1, 2, 3, 4, 5, 7, 8]


def test_adaptive_reports_transient_failures_per_item(servers: FaultServers) -> None:
    server = servers.start(faults=Faults(outage=True))
    result = embed_adaptive(remote(server, RetryPolicy(attempts=1)).embed, texts_of(3))
    assert not result.vectors
    assert all(isinstance(e, EndpointUnavailable) for e in result.errors.values())
    assert sorted(result.errors) == [0, 1, 2]


# --- a corpus against a flaky endpoint -------------------------------------------------------


def test_every_text_embedded_against_30_percent_faults(servers: FaultServers) -> None:
    faults = Faults(
        rate_limited=0.10, unavailable=0.10, dropped=0.05, slow=0.05, slow_s=1.5, seed=6
    )
    server = servers.start(faults=faults)
    policy = RetryPolicy(attempts=10, initial_s=0.01, max_s=0.2, jitter_s=0.01, budget_s=30)
    stats = RetryStats()
    embedder = remote(server, policy, stats=stats, max_batch=8, timeout_s=1.0)
    texts = texts_of(200)
    parts = [texts[i : i + 50] for i in range(0, 200, 50)]

    with ThreadPoolExecutor(4) as pool:
        vectors = np.concatenate(list(pool.map(embedder.embed, parts)))

    assert_same_as_local(servers, texts, vectors)
    injected = sum(server.counts[k] for k in ("rate_limited", "unavailable", "dropped", "slow"))
    assert injected > 0 and stats.retries >= injected
    assert stats.gave_up == 0 and stats.calls == 4 * 7
    assert stats.attempts == stats.calls + stats.retries
    print(f"\n30% faults, 200 texts: server {dict(server.counts)}; client {stats.summary()}")
