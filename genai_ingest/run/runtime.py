"""The heavy objects of one configuration (store, DLQ, embedder, cache, chunker, hasher),
built once per process, and the fingerprint that says when the same bytes need redoing."""

from __future__ import annotations

import json
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genai_ingest.config import Settings
from genai_ingest.embed.encoders import EncoderSpec
from genai_ingest.embed.local import (
    Embedder,
    EmbeddingCache,
    LocalEmbedder,
    resolve_model_path,
    sentence_window,
)
from genai_ingest.failures.dlq import DeadLetterQueue
from genai_ingest.failures.errors import ModelMismatch, Stage
from genai_ingest.failures.redact import register_secret
from genai_ingest.failures.resilience import CircuitBreaker, RetryStats, breaker_for
from genai_ingest.models import sha256_hex
from genai_ingest.run.claims import ClaimKeeper
from genai_ingest.run.spool import FailureSpool
from genai_ingest.stores import open_claims, open_dlq, open_store
from genai_ingest.stores.base import VectorStore
from genai_ingest.text.dedup import MinHasher

if TYPE_CHECKING:  # llama-index: imported where used, an unchanged re-run needs none
    from genai_ingest.text.chunk import Chunker

#: Bump when a change in this package changes the chunks produced for the same bytes.
PIPELINE_VERSION = "5"  # 2: secrets redacted in the normal form (Markdown escapes undone)
# 3: PDF text reflowed, chunks packed across small sections, embedded with their heading
#    context, page and heading citations
# 4: multi-vector chunks (sentence windows embedded too)
# 5: the encoder in the index identity (int8 ONNX, window vectors pooled from the chunk pass)

#: Parse settings that change how parsing runs, not what it produces.
_OPERATIONAL_PARSE_FIELDS = {
    "passwords",
    "ocr_timeout_s",
    "convert_timeout_s",
    "isolate",
    "workers",
    "timeout_s",
    "timeout_per_mb_s",
    "text_timeout_per_mb_s",
    "timeout_per_page_s",
    "max_timeout_s",
    "worker_memory_mb",
    "max_tasks_per_worker",
}


class Runtime:
    """Store, DLQ, embedder, cache, chunker and hasher for one configuration."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for secret in settings.parse.passwords.values():
            register_secret(secret.get_secret_value())
        self._local = threading.local()
        self._opened = False

    @cached_property
    def store(self) -> VectorStore:
        return open_store(self.settings)

    @cached_property
    def dlq(self) -> DeadLetterQueue:
        return open_dlq(self.settings)

    @cached_property
    def embedder(self) -> Embedder:
        """Built (a local model loaded) on first use only: a run with nothing to embed, or a
        re-run of unchanged documents, never loads it."""
        identity = self.store.index_identity()
        embedder = shared_embedder(self.settings, identity, self.retry_stats)
        if identity is not None:  # refuses a model of another dimension under the same id
            self.store.ensure_index(embedder.model_id, embedder.dimension)
        return embedder

    @cached_property
    def query_embedder(self) -> Embedder:
        """What embeds search queries: this configuration's encoder (its int8 or fp32 ONNX
        export, no torch: ``genai_ingest.embed.encoder_choice``), which the search checks against
        the index's; a remote endpoint's ``embedder``."""
        from genai_ingest.embed.encoder_choice import query_embedder

        if self.settings.remote_embed.primary is not None:
            return self.embedder
        spec = self.encoder
        return query_embedder(
            self.settings, spec, lambda: LocalEmbedder(self.settings.embed, spec.id)
        )

    @cached_property
    def encoder(self) -> EncoderSpec:
        """What this configuration embeds with (model, precision, window pooling)."""
        return EncoderSpec.of(self.settings)

    @cached_property
    def model_id(self) -> str:
        """The id vectors are recorded under (``EncoderSpec.id``), known without loading a
        local model."""
        remote = self.settings.remote_embed
        if remote.primary is None:
            return self.encoder.id  # what the local embedder records
        if not remote.fallbacks:
            return remote.primary.model  # what ``RemoteEmbedder`` records
        return self.embedder.model_id  # the index's vector space; building it asks nothing

    @cached_property
    def retry_stats(self) -> RetryStats:
        """Retries and backoff time of every remote call made for this configuration."""
        return RetryStats()

    @cached_property
    def cache(self) -> EmbeddingCache:
        return EmbeddingCache(self.settings.database_path, self.settings.sqlite_busy_timeout_s)

    @property
    def chunker(self) -> Chunker:
        """One per thread: Hugging Face fast tokenizers are not safe to share across threads."""
        chunker = getattr(self._local, "chunker", None)
        if chunker is None:
            from genai_ingest.text.chunk import Chunker

            tokenizer, max_tokens = _tokenizer_for(self.settings)
            chunker = self._local.chunker = Chunker(tokenizer, self.settings.chunk, max_tokens)
        return chunker

    @cached_property
    def hasher(self) -> MinHasher:
        return MinHasher(self.settings.dedup)

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever the same bytes would give different chunks or vectors."""
        return fingerprint_of(self.settings, self.model_id)

    @cached_property
    def claims(self) -> ClaimKeeper:
        """This process's claims on documents (concurrent runs never work on one at once)."""
        return ClaimKeeper(open_claims(self.settings, self.store), self.settings.policies.claims)

    @cached_property
    def store_breaker(self) -> CircuitBreaker:
        return breaker_for(
            f"store:{self.settings.store_url or self.settings.database_path}",
            self.settings.policies.store_breaker,
        )

    def open(self) -> Runtime:
        """Check the index identity before any work (refuses another model's or encoder's
        index). An index that records the configured encoder is accepted without loading it;
        checked once."""
        if self._opened:
            return self
        identity = self.store.index_identity()
        if identity is not None and identity[0] == self.model_id:
            self.store.ensure_index(*identity)  # the store's write target; no model loaded
        else:
            try:
                self.store.ensure_index(self.embedder.model_id, self.embedder.dimension)
            except ModelMismatch as exc:
                if identity is None:
                    raise
                message = mismatch_message(identity[0], self.model_id)
                raise ModelMismatch(message, stage=Stage.STORE) from exc
        self._opened = True
        return self

    def drain_spool(self) -> int:
        """Move failures spooled during a store outage into the DLQ (each run and replay)."""
        return FailureSpool(self.settings.data_dir).drain(self.dlq)


def fingerprint_of(s: Settings, model_id: str) -> str:
    """The fingerprint of ``s`` embedding with encoder ``model_id`` (``Runtime.fingerprint``)."""
    relevant = {
        "pipeline": PIPELINE_VERSION,
        "model": model_id,
        "parse": s.parse.model_dump(exclude=_OPERATIONAL_PARSE_FIELDS),
        "clean": s.clean.model_dump(),
        "validation": s.validation.model_dump(),
        "chunk": s.chunk.model_dump(),
        "dedup": s.dedup.model_dump(),
    }
    return sha256_hex(json.dumps(relevant, sort_keys=True, default=str))[:16]


def mismatch_message(recorded: str, configured: str) -> str:
    """Why an index of encoder ``recorded`` refuses vectors of ``configured``, and what to do."""
    was, now = EncoderSpec.parse(recorded), EncoderSpec.parse(configured)
    hint = (
        "rebuild the index for it from the stored chunks, searches served meanwhile "
        "(genai-ingest reindex, then genai-ingest reindex --swap --qa FILE --min-passage-at-k X)"
    )
    if was.model == now.model:
        hint += (
            "; or keep this index by configuring its encoder (embed.precision="
            f"{'int8' if was.int8 else 'fp32'}, embed.window_pooling="
            f"{was.windows}"
            f"{', embed.backend=onnx' if was.int8 else ''})"
        )
    return (
        f"index was built by encoder {recorded} ({was.describe()}); this configuration "
        f"embeds with {configured} ({now.describe()}): vectors of the two are never mixed: {hint}"
    )


_tokenizer_lock = threading.Lock()  # transformers' lazy imports race across threads


def _tokenizer_for(settings: Settings) -> tuple[Any, int]:
    """A private copy of the tokenizer that measures chunks (``embed.model``'s own, read from
    its folder: chunking never loads the model) and the model's token window."""
    path = resolve_model_path(settings.embed.model)
    with _tokenizer_lock:
        # a model folder's tokenizer.json loads without AutoTokenizer, which imports torch
        if (Path(path) / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast as AutoTokenizer
        else:
            from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
    max_tokens = (
        settings.embed.max_seq_tokens
        or sentence_window(path)  # what sentence-transformers (and the ONNX export) truncate at
        or getattr(tokenizer, "model_max_length", 256)
    )
    return tokenizer, int(max_tokens)


_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


def shared_embedder(
    settings: Settings, index_identity: tuple[str, int] | None, stats: RetryStats
) -> Embedder:
    """One embedder per model configuration per process (a model is loaded once)."""
    from genai_ingest.embed.remote import build_embedder

    key = sha256_hex(
        settings.embed.model_dump_json()
        + settings.remote_embed.model_dump_json()
        + json.dumps(index_identity)
    )
    with _embedders_lock:
        if key not in _embedders:
            _embedders[key] = build_embedder(settings, index_identity, stats)
        return _embedders[key]


# --- one runtime per configuration per process -----------------------------------------------

_runtimes: dict[str, Runtime] = {}
_runtimes_lock = threading.Lock()


def settings_key(settings: Settings) -> str:
    """Identity of a configuration, secrets included (never printed)."""
    secrets = sorted(v.get_secret_value() for v in settings.parse.passwords.values())
    return sha256_hex(settings.model_dump_json() + json.dumps(secrets))


def runtime_for(settings: Settings, *, writing: bool = True) -> Runtime:
    """The process-wide runtime for ``settings`` (the model is loaded once per process);
    opened (the index identity checked) for ``writing``, as is for reading only."""
    key = settings_key(settings)
    with _runtimes_lock:
        runtime = _runtimes.setdefault(key, Runtime(settings))
        return runtime.open() if writing else runtime
