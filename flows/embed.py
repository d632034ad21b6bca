"""The ``embed`` flow: one batch of chunk texts → vectors, on a GPU pod of the Kubernetes pool.

Payloads never travel as parameters: the caller writes ``embed/<batch key>/batch.json``
(model, dimension, texts, text hashes) to object storage and passes its URI; the flow writes
``vectors.npz`` (vectors, text hashes, model) beside it and returns that URI. Re-running a
batch whose vectors exist returns the same URI without embedding again."""

from __future__ import annotations

import io
import json
import time
from functools import lru_cache
from typing import Any

import numpy as np
from prefect import flow, get_run_logger

from genai_ingest.config import EmbedSettings
from genai_ingest.embed.local import LocalEmbedder, check_vectors
from genai_ingest.failures.errors import EmbeddingRejected, Stage
from genai_ingest.stores.object_store import ObjectStore, open_object

BATCH_FILE = "batch.json"
VECTORS_FILE = "vectors.npz"


def vectors_key(batch_key: str) -> str:
    """Where the vectors of the payload at ``batch_key`` go (same folder)."""
    return batch_key.removesuffix(BATCH_FILE) + VECTORS_FILE


def encode_payload(model: str, dimension: int, texts: list[str], hashes: list[str]) -> bytes:
    return json.dumps(
        {"model": model, "dimension": dimension, "texts": texts, "text_hashes": hashes}
    ).encode()


def encode_vectors(vectors: np.ndarray, hashes: list[str], model: str) -> bytes:
    out = io.BytesIO()
    np.savez(out, vectors=vectors, text_hashes=np.array(hashes), model=np.array(model))
    return out.getvalue()


def decode_vectors(data: bytes) -> tuple[np.ndarray, list[str], str]:
    """(vectors, text hashes, model) from a ``vectors.npz``."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return npz["vectors"], [str(h) for h in npz["text_hashes"]], str(npz["model"])


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=2)
def _embedder(model: str, device: str, batch_size: int) -> LocalEmbedder:
    """One model per process (a pod runs one batch; a local worker may run several)."""
    return LocalEmbedder(EmbedSettings(model=model, device=device, batch_size=batch_size))


def _read_payload(store: ObjectStore, key: str) -> dict[str, Any]:
    data = store.read(key)
    if data is None:
        raise FileNotFoundError(f"no batch payload at {store.uri(key)}")
    return json.loads(data)


@flow(name="embed", persist_result=True)
def embed(batch: str, device: str | None = None, batch_size: int = 256) -> str:
    """Embed one batch payload and return the URI of its vectors.

    Args:
        batch: URI (s3://… or file://…) of the batch payload JSON written by the ingest flow.
        device: torch device; default: cuda when the pod has a GPU, else cpu.
        batch_size: texts per forward pass (raise it on large GPUs).
    """
    store, key = open_object(batch)
    out_key = vectors_key(key)
    if store.read(out_key) is not None:
        return store.uri(out_key)
    payload = _read_payload(store, key)
    texts, hashes = payload["texts"], payload["text_hashes"]
    embedder = _embedder(payload["model"], device or default_device(), batch_size)
    if embedder.dimension != payload["dimension"]:
        raise EmbeddingRejected(
            f"model gives dimension {embedder.dimension}, the index expects {payload['dimension']}",
            stage=Stage.EMBED,
        )
    start = time.perf_counter()
    vectors = check_vectors(embedder.embed(texts), len(texts), embedder.dimension)
    seconds = time.perf_counter() - start
    store.write(out_key, encode_vectors(vectors, hashes, payload["model"]))
    get_run_logger().info(
        "embedded %d texts on %s in %.2f s (%.0f texts/s)",
        len(texts),
        embedder.device,
        seconds,
        len(texts) / max(seconds, 1e-9),
    )
    return store.uri(out_key)
