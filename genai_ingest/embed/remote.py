"""Remote embedding over OpenAI-compatible endpoints (OpenAI, vLLM, text-embeddings-inference,
Ollama), with retries, a circuit breaker, and fallbacks that never mix vector spaces.

``POST {url}/embeddings`` with ``{"model", "input": [...]}`` answers
``{"data": [{"index", "embedding"}, ...]}``. Status codes map to the error taxonomy:
429 → ``RateLimited`` (honouring ``Retry-After``), 500/502/503/504, timeouts and connection
errors → ``EndpointUnavailable``, 413 → ``PayloadTooLarge`` (split the batch), 400/422 →
``EmbeddingRejected``, 401/403 → ``Unauthorized`` (naming the key setting), 404 → ``SystemFault``
(model or path misconfigured). No key is sent unless one is configured."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import numpy as np

from genai_ingest.config import RemoteEndpoint, Settings
from genai_ingest.embed.local import Embedder, check_vectors
from genai_ingest.failures.errors import (
    EmbeddingRejected,
    EndpointUnavailable,
    IngestError,
    MissingDependency,
    ModelMismatch,
    PayloadTooLarge,
    RateLimited,
    Stage,
    SystemFault,
    TransientError,
    Unauthorized,
)
from genai_ingest.failures.policies import BreakerPolicy, RetryPolicy
from genai_ingest.failures.redact import redact, register_secret
from genai_ingest.failures.resilience import (
    CircuitBreaker,
    RetryStats,
    breaker_for,
    call_with_retry,
)

logger = logging.getLogger(__name__)

UNAVAILABLE_STATUSES = frozenset({500, 502, 503, 504})
DIMENSION_PROBE = "dimension probe"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_for_status(
    response: httpx.Response, where: str, key_setting: str = "api_key_env"
) -> IngestError | None:
    """The taxonomy error for a non-2xx answer; None for a success. ``key_setting`` names
    where the API key comes from (for the 401/403 message)."""
    status = response.status_code
    if status < 400:
        return None
    reason = redact(f"{where}: HTTP {status}: {response.text[:200]}")
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429:
        return RateLimited(reason, stage=Stage.EMBED, retry_after=retry_after)
    if status in UNAVAILABLE_STATUSES or status >= 500:
        return EndpointUnavailable(reason, stage=Stage.EMBED, retry_after=retry_after)
    if status == 413:
        return PayloadTooLarge(reason, stage=Stage.EMBED)
    if status in (401, 403):
        return Unauthorized(
            f"{reason}: the endpoint refused the API key; {key_setting}", stage=Stage.EMBED
        )
    if status == 404:
        return SystemFault(reason, stage=Stage.EMBED)
    return EmbeddingRejected(reason, stage=Stage.EMBED)


def parse_embeddings(response: httpx.Response, count: int, where: str) -> np.ndarray:
    """The ``(count, dim)`` vectors of an OpenAI-style answer, in input order."""
    try:
        data = response.json()["data"]
        ordered = sorted(data, key=lambda item: int(item["index"]))
        indexes = [int(item["index"]) for item in ordered]
        vectors = np.asarray([item["embedding"] for item in ordered], dtype=np.float32)
    except (ValueError, KeyError, TypeError) as exc:
        raise EndpointUnavailable(
            f"{where}: malformed answer ({type(exc).__name__})", stage=Stage.EMBED
        ) from exc
    if indexes != list(range(count)) or vectors.ndim != 2:
        raise EmbeddingRejected(
            f"{where}: expected indexes 0..{count - 1}, got {len(indexes)} items",
            stage=Stage.EMBED,
        )
    return vectors


def resolve_api_key(endpoint: RemoteEndpoint) -> str | None:
    """The endpoint's key (inline secret, else the named env var), registered for redaction."""
    if endpoint.api_key is not None:
        key = endpoint.api_key.get_secret_value()
    elif endpoint.api_key_env:
        key = os.environ.get(endpoint.api_key_env)
        if not key:
            raise MissingDependency(
                f"environment variable {endpoint.api_key_env} holds no API key", stage=Stage.EMBED
            )
    else:
        return None
    register_secret(key)
    return key


def _batches(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[start : start + size] for start in range(0, len(texts), size)]


class RemoteEmbedder:
    """The ``Embedder`` contract over one OpenAI-compatible endpoint: batches of at most
    ``endpoint.max_batch``, each retried per ``policy`` through the endpoint's circuit breaker;
    vectors checked and L2-normalised. ``dimension`` is probed once when not configured."""

    def __init__(
        self,
        endpoint: RemoteEndpoint,
        policy: RetryPolicy | None = None,
        breaker_policy: BreakerPolicy | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        stats: RetryStats | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.model_id = endpoint.model
        self.url = f"{endpoint.url.rstrip('/')}/embeddings"
        self.name = f"{endpoint.model}@{redact(endpoint.url)}"
        self.policy = policy or RetryPolicy()
        self.breaker = breaker or breaker_for(
            f"embed:{redact(endpoint.url)}", breaker_policy or BreakerPolicy()
        )
        self.stats = stats if stats is not None else RetryStats()
        self._dimension = endpoint.dimension
        self._dimension_lock = threading.Lock()
        key = resolve_api_key(endpoint)
        self._client = httpx.Client(
            timeout=httpx.Timeout(endpoint.timeout_s),
            headers={"Authorization": f"Bearer {key}"} if key else None,
        )

    @property
    def key_setting(self) -> str:
        """Where this endpoint's API key comes from, for a refused key's message."""
        if self.endpoint.api_key_env:
            return f"the key comes from ${self.endpoint.api_key_env}"
        if self.endpoint.api_key is not None:
            return "the key comes from the endpoint's api_key setting"
        return (
            "no key was sent: name the variable that holds one with --embedder-api-key-env VAR"
            " (setting: the endpoint's api_key_env)"
        )

    @property
    def dimension(self) -> int:
        """Configured, learnt from the first answer, or probed with one request."""
        if self._dimension is None:
            with self._dimension_lock:
                if self._dimension is None:
                    self._dimension = int(self._post_with_retry([DIMENSION_PROBE]).shape[1])
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        parts = []
        for batch in _batches(texts, self.endpoint.max_batch):
            vectors = self._post_with_retry(batch)
            if self._dimension is None:
                self._dimension = int(vectors.shape[1])
            parts.append(check_vectors(vectors, len(batch), self._dimension))
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(parts)

    def _post_with_retry(self, batch: Sequence[str]) -> np.ndarray:
        return call_with_retry(
            lambda: self._post(batch), self.policy, self.breaker, stats=self.stats
        )

    def _post(self, batch: Sequence[str]) -> np.ndarray:
        where = f"POST {redact(self.url)}"
        try:
            response = self._client.post(self.url, json={"model": self.model_id, "input": batch})
        except httpx.TimeoutException as exc:
            raise EndpointUnavailable(
                f"{where}: timed out ({type(exc).__name__})", stage=Stage.EMBED
            ) from exc
        except httpx.TransportError as exc:
            raise EndpointUnavailable(
                redact(f"{where}: {type(exc).__name__}: {exc}"), stage=Stage.EMBED
            ) from exc
        error = error_for_status(response, where, self.key_setting)
        if error is not None:
            raise error
        return parse_embeddings(response, len(batch), where)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteEmbedder:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _label(embedder: Embedder) -> str:
    return str(getattr(embedder, "name", embedder.model_id))


class FallbackEmbedder:
    """The primary embedder, and when it fails transiently (breaker open, retry budget spent)
    the fallbacks in order: only those producing the index's vector space, i.e. the same
    ``(model_id, dimension)`` as ``index_identity`` (the primary's when the index is new).
    With no such fallback the primary's transient error surfaces, so the documents go to the
    DLQ as replayable; two models' vectors never meet in one index."""

    def __init__(
        self,
        primary: Embedder,
        fallbacks: Sequence[Embedder],
        index_identity: tuple[str, int] | None = None,
    ) -> None:
        self.primary = primary
        self.fallbacks = list(fallbacks)
        self._identity = index_identity
        self.usage: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def identity(self) -> tuple[str, int]:
        return self._identity or (self.primary.model_id, self.primary.dimension)

    @property
    def model_id(self) -> str:
        return self.identity[0]

    @property
    def dimension(self) -> int:
        return self.identity[1]

    def matches(self, embedder: Embedder) -> bool:
        """Whether ``embedder`` produces the index's vector space (model first: no probe)."""
        model_id, dimension = self.identity
        return embedder.model_id == model_id and embedder.dimension == dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            if not self.matches(self.primary):
                raise ModelMismatch(
                    f"primary {_label(self.primary)} does not produce the index's vector space "
                    f"{self.identity}",
                    stage=Stage.EMBED,
                )
            vectors = self.primary.embed(texts)
        except TransientError as exc:
            if isinstance(exc, PayloadTooLarge):
                raise
            return self._embed_with_fallbacks(texts, exc)
        self._count("primary")
        return vectors

    def _embed_with_fallbacks(
        self, texts: Sequence[str], primary_error: TransientError
    ) -> np.ndarray:
        skipped: list[str] = []
        for fallback in self.fallbacks:
            label = _label(fallback)
            try:
                if not self.matches(fallback):
                    skipped.append(label)
                    logger.warning("fallback %s skipped: not the index's vector space", label)
                    continue
                vectors = fallback.embed(texts)
            except IngestError as exc:
                logger.warning("fallback %s failed: %s", label, redact(str(exc)))
                continue
            self._count(label)
            return vectors
        self._count("unavailable")
        reason = f"{primary_error.reason}; no usable fallback"
        if skipped:
            reason += f" (skipped, other vector space: {', '.join(skipped)})"
        raise type(primary_error)(
            reason, stage=Stage.EMBED, retry_after=primary_error.retry_after
        ) from primary_error

    def _count(self, key: str) -> None:
        with self._lock:
            self.usage[key] += 1


def build_embedder(
    settings: Settings,
    index_identity: tuple[str, int] | None = None,
    stats: RetryStats | None = None,
) -> Embedder:
    """The local embedder when no remote primary is configured, else the remote primary with
    its fallbacks. ``stats`` collects the retries of every remote endpoint."""
    remote = settings.remote_embed
    if remote.primary is None:
        from genai_ingest.embed.encoder_choice import ingest_embedder
        from genai_ingest.embed.encoders import EncoderSpec

        return ingest_embedder(settings, EncoderSpec.of(settings))
    stats = stats if stats is not None else RetryStats()
    policy = settings.policies.embed_endpoint
    breaker_policy = settings.policies.embed_breaker

    def make(endpoint: RemoteEndpoint) -> RemoteEmbedder:
        return RemoteEmbedder(endpoint, policy, breaker_policy, stats=stats)

    primary = make(remote.primary)
    if not remote.fallbacks:
        return primary
    return FallbackEmbedder(primary, [make(e) for e in remote.fallbacks], index_identity)
