"""The remote embedder and the fallback chain, against real HTTP embedding servers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import numpy as np
import pytest
from fault_server import Faults, FaultServer, FaultServers, fault_servers
from pydantic import SecretStr

from genai_ingest.config import RemoteEmbedSettings, RemoteEndpoint, Settings
from genai_ingest.embed.local import LocalEmbedder
from genai_ingest.embed.remote import (
    FallbackEmbedder,
    RemoteEmbedder,
    build_embedder,
    parse_retry_after,
)
from genai_ingest.failures.errors import (
    CircuitOpen,
    EndpointUnavailable,
    IngestError,
    MissingDependency,
    ModelMismatch,
    PayloadTooLarge,
    SystemFault,
    TransientError,
    Unauthorized,
)
from genai_ingest.failures.policies import BreakerPolicy, Policies, RetryPolicy
from genai_ingest.failures.resilience import BreakerState, CircuitBreaker, RetryStats

MODEL = "all-MiniLM-L6-v2"
IDENTITY = (MODEL, 384)
QUICK = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05, jitter_s=0.01, budget_s=10)
API_KEY = "sk-test-5b0e1f6c9d2a47e8"


@pytest.fixture
def servers(local_embedder: LocalEmbedder) -> Iterator[FaultServers]:
    with fault_servers(local_embedder) as started:
        yield started


def remote(
    server: FaultServer,
    policy: RetryPolicy = QUICK,
    threshold: int = 50,
    **endpoint: object,
) -> RemoteEmbedder:
    settings = {"url": server.url, "model": MODEL, "timeout_s": 5.0, **endpoint}
    breaker = CircuitBreaker(f"embed:{server.url}", BreakerPolicy(failure_threshold=threshold))
    return RemoteEmbedder(RemoteEndpoint(**settings), policy, breaker=breaker)


def texts_of(count: int) -> list[str]:
    return [f"Paragraph {i} describes item {i % 13} in some detail." for i in range(count)]


def assert_same_as_local(servers: FaultServers, texts: list[str], vectors: np.ndarray) -> None:
    expected = servers.embedder.embed(texts)
    assert vectors.shape == expected.shape
    assert (np.sum(vectors * expected, axis=1) > 0.999).all()


# --- the client ------------------------------------------------------------------------------


def test_vectors_equal_the_local_model(servers: FaultServers) -> None:
    server = servers.start()
    texts = texts_of(50)
    with remote(server, max_batch=16) as embedder:
        vectors = embedder.embed(texts)
        assert embedder.dimension == 384 and embedder.model_id == MODEL
    assert_same_as_local(servers, texts, vectors)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert server.counts["requests"] == 4, "batches of at most max_batch"


def test_dimension_is_probed_once(servers: FaultServers) -> None:
    server = servers.start()
    embedder = remote(server)
    assert embedder.dimension == 384 and embedder.dimension == 384
    assert server.counts["requests"] == 1
    assert embedder.embed([]).shape == (0, 384)


@pytest.mark.parametrize(
    ("faults", "endpoint", "error", "requests"),
    [
        (Faults(outage=True), {}, EndpointUnavailable, 3),
        (Faults(dropped=1.0), {}, EndpointUnavailable, 3),
        (Faults(slow=1.0, slow_s=1.0), {"timeout_s": 0.2}, EndpointUnavailable, 3),
        (Faults(max_items=1), {}, PayloadTooLarge, 1),
        (Faults(), {"model": "no-such-model"}, SystemFault, 1),
    ],
    ids=["503", "dropped", "timeout", "413", "404"],
)
def test_failures_are_classified(
    servers: FaultServers,
    faults: Faults,
    endpoint: dict[str, object],
    error: type[IngestError],
    requests: int,
) -> None:
    server = servers.start(faults=faults)
    with pytest.raises(error):
        remote(server, **endpoint).embed(["one", "two"])
    assert server.counts["requests"] == requests, "only transient failures are retried"


def test_connection_refused_is_transient(servers: FaultServers) -> None:
    server = servers.start()
    server.stop()
    with pytest.raises(EndpointUnavailable) as caught:
        remote(server).embed(["x"])
    assert caught.value.replayable and "ConnectError" in caught.value.reason


def test_retry_after_parsing() -> None:
    in_three = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    assert parse_retry_after("7") == 7.0
    assert 1.5 < parse_retry_after(in_three) <= 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# --- API keys --------------------------------------------------------------------------------


def test_api_key_sent_but_never_logged(
    servers: FaultServers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = servers.start(faults=Faults(fail_first=2), api_key=API_KEY, echo_auth=True)
    embedder = remote(server, api_key=SecretStr(API_KEY))

    assert embedder.embed(["secret-free text"]).shape == (1, 384)

    assert server.auth_headers == [f"Bearer {API_KEY}"] * 3
    assert any("retrying" in record.getMessage() for record in caplog.records)
    assert API_KEY not in caplog.text


def test_api_key_from_env_kept_out_of_errors(
    servers: FaultServers, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    server = servers.start(faults=Faults(outage=True), api_key=API_KEY, echo_auth=True)
    monkeypatch.setenv("TEST_EMBED_KEY", API_KEY)

    with pytest.raises(EndpointUnavailable) as caught:
        remote(server, api_key_env="TEST_EMBED_KEY").embed(["x"])

    assert server.auth_headers[0] == f"Bearer {API_KEY}"
    for text in (str(caught.value), repr(caught.value), str(caught.value.__cause__), caplog.text):
        assert API_KEY not in text
    assert "***" in str(caught.value), "the server echoed the key; it was masked"


def test_wrong_key_is_a_configuration_fault(
    servers: FaultServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = servers.start(api_key=API_KEY, echo_auth=True)
    monkeypatch.setenv("TEST_EMBED_KEY", "sk-wrong-0000000000")
    with pytest.raises(SystemFault) as caught:
        remote(server, api_key_env="TEST_EMBED_KEY").embed(["x"])
    assert "sk-wrong-0000000000" not in str(caught.value) and "401" in str(caught.value)
    monkeypatch.delenv("TEST_EMBED_KEY")
    with pytest.raises(MissingDependency):
        remote(server, api_key_env="TEST_EMBED_KEY")


def test_no_key_sent_unless_configured_and_a_refusal_names_the_setting(
    servers: FaultServers,
) -> None:
    open_server = servers.start()
    assert remote(open_server).embed(["x"]).shape == (1, 384)
    assert open_server.auth_headers == [None]

    locked = servers.start(api_key=API_KEY)
    with pytest.raises(Unauthorized) as caught:
        remote(locked).embed(["x"])
    assert caught.value.code == "unauthorized" and "HTTP 401" in caught.value.reason
    assert "--embedder-api-key-env" in caught.value.reason
    assert locked.counts["requests"] == 1, "a refused key is not retried"


# --- fallbacks -------------------------------------------------------------------------------


def test_fallback_used_when_primary_down_and_space_matches(servers: FaultServers) -> None:
    primary_server = servers.start(faults=Faults(outage=True))
    fallback_server = servers.start()
    primary = remote(primary_server, RetryPolicy(attempts=2, initial_s=0.01), threshold=2)
    embedder = FallbackEmbedder(primary, [remote(fallback_server)], IDENTITY)
    texts = texts_of(10)

    first = embedder.embed(texts)
    second = embedder.embed(texts)

    assert_same_as_local(servers, texts, first)
    assert np.array_equal(first, second)
    assert primary.breaker.state is BreakerState.OPEN
    assert primary_server.counts["requests"] == 2, "open breaker: straight to the fallback"
    assert fallback_server.counts["ok"] == 3, "one dimension probe, then two batches"
    assert embedder.usage == {f"{MODEL}@{fallback_server.url}": 2}
    assert (embedder.model_id, embedder.dimension) == IDENTITY


@pytest.mark.parametrize(
    ("served", "endpoint"),
    [
        ({"model": "other-model"}, {"model": "other-model"}),
        ({"dimension": 256}, {"dimension": 256}),
    ],
    ids=["other-model", "other-dimension"],
)
def test_fallback_of_another_space_is_never_used(
    servers: FaultServers, served: dict[str, object], endpoint: dict[str, object]
) -> None:
    primary_server = servers.start(faults=Faults(outage=True))
    fallback_server = servers.start(**served)
    primary = remote(primary_server, RetryPolicy(attempts=2, initial_s=0.01), threshold=2)
    embedder = FallbackEmbedder(primary, [remote(fallback_server, **endpoint)], IDENTITY)

    with pytest.raises(EndpointUnavailable) as first:
        embedder.embed(["x"])
    with pytest.raises(CircuitOpen) as second:
        embedder.embed(["x"])

    assert fallback_server.counts["requests"] == 0
    for caught in (first, second):
        assert isinstance(caught.value, TransientError) and caught.value.replayable
        assert "skipped, other vector space" in caught.value.reason
    assert embedder.usage == {"unavailable": 2}


def test_primary_of_another_space_is_refused(servers: FaultServers) -> None:
    server = servers.start(model="other-model")
    embedder = FallbackEmbedder(remote(server, model="other-model"), [], IDENTITY)
    with pytest.raises(ModelMismatch):
        embedder.embed(["x"])
    assert server.counts["requests"] == 0


def test_build_embedder_from_settings(servers: FaultServers) -> None:
    primary_server = servers.start(faults=Faults(outage=True))
    fallback_server = servers.start()
    settings = Settings(
        remote_embed=RemoteEmbedSettings(
            primary=RemoteEndpoint(url=primary_server.url, model=MODEL, dimension=384),
            fallbacks=[RemoteEndpoint(url=fallback_server.url, model=MODEL, dimension=384)],
        ),
        policies=Policies(embed_endpoint=QUICK, embed_breaker=BreakerPolicy(cooldown_s=60)),
    )
    stats = RetryStats()

    embedder = build_embedder(settings, stats=stats)

    assert isinstance(embedder, FallbackEmbedder)
    assert_same_as_local(servers, ["a text"], embedder.embed(["a text"]))
    assert stats.retries == 2 and stats.gave_up == 1
