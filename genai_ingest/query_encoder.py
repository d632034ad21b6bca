"""Torch-free query encoding: an ONNX export of the local sentence-transformers model, run with
onnxruntime, the Rust ``tokenizers`` and numpy pooling, so ``search`` and ``eval`` import no
torch, transformers or sentence-transformers.

An export lives in a per-user cache under a key of the model folder's identity, written once
by ``genai_ingest.onnx_export`` (after a ``run`` that loaded the model, or by the first search
that finds none). A model it cannot reproduce is recorded as rejected there and its queries
keep sentence-transformers; a damaged export is discarded and made again."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from genai_ingest.config import Settings
from genai_ingest.embed import Embedder, LocalEmbedder, resolve_model_path

#: Bump when the export or its manifest changes: older exports are then made again.
EXPORT_FORMAT = "1"
MODEL, TOKENIZER, MANIFEST, REJECTED = (
    "model.onnx",
    "tokenizer.json",
    "manifest.json",
    "rejected.json",
)
_HASHED_BYTES = 1 << 20  # smaller files are hashed whole; larger ones (weights) by size and mtime


@dataclass(frozen=True)
class ExportSlot:
    """Where the export of one model folder lives (``folder``) and the model id it serves."""

    folder: Path
    model_id: str

    @property
    def ready(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    @property
    def rejected(self) -> bool:
        return (self.folder / REJECTED).is_file()


class OnnxQueryEncoder:
    """The ``Embedder`` of an export: L2-normalised float32 vectors, like ``LocalEmbedder``."""

    def __init__(self, folder: Path, model_id: str, batch_size: int = 32) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        self.model_id, self.batch_size = model_id, batch_size
        self.dimension = int(self.manifest["dimension"])
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
        self.tokenizer.enable_truncation(int(self.manifest["window"]))
        self.tokenizer.enable_padding(**self.manifest["padding"])
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(
            str(folder / MODEL), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts, size = list(texts), self.batch_size
        parts = [self._embed(texts[i : i + size]) for i in range(0, len(texts), size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dimension), np.float32)

    def _embed(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        mask = np.array([e.attention_mask for e in encodings], np.int64)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], np.int64),
            "attention_mask": mask,
            "token_type_ids": np.array([e.type_ids for e in encodings], np.int64),
        }
        [hidden] = self.session.run(None, {name: feeds[name] for name in self.inputs})
        return normalised(pooled(hidden, mask, self.manifest["pooling"]))

    def check(self) -> None:
        """Refuse an export that changed since it was verified: its probe vector differs."""
        probe = self.manifest["probe"]
        cosine = float(self.embed([probe["text"]])[0] @ np.asarray(probe["vector"]))
        if not cosine >= 0.9999:
            raise ValueError(f"probe vector differs (cosine {cosine:.6f})")


def pooled(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Mean over the attended tokens, or the first ([CLS]) token: sentence-transformers' Pooling."""
    if mode == "cls":
        return hidden[:, 0]
    weights = mask[:, :, None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)


def normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)


# --- where exports live ----------------------------------------------------------------------


def cache_root(settings: Settings) -> Path:
    """``query_encoder.cache_dir``, else ``$XDG_CACHE_HOME`` or ``~/.cache``, per user."""
    configured = settings.query_encoder.cache_dir
    if configured is not None:
        return configured.expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genai-ingest" / "query-encoders"


def model_folder(model: str) -> Path | None:
    """The local folder of a sentence-transformers model (a path, the shipped default, or a
    Hugging Face cache snapshot); None when it is not on this machine."""
    path = Path(resolve_model_path(model)).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, "modules.json")
    except ValueError:  # not a hub id either
        return None
    return Path(found).parent if isinstance(found, str) else None


def folder_identity(folder: Path) -> str:
    """sha256 of the folder's small files, the size and mtime of its large ones (weights), the
    export format and the exporter's (torch's) version."""
    digest = hashlib.sha256(f"{EXPORT_FORMAT} torch {_version('torch')}".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative.startswith(".") or "/." in relative:
            continue
        stat = path.stat()
        digest.update(relative.encode() + b"\0")
        if stat.st_size <= _HASHED_BYTES:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        else:
            digest.update(f"{stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def export_slot(settings: Settings) -> ExportSlot | None:
    """The slot of the configured local model; None for a remote endpoint, with the encoder
    off, or when the model folder is not on this machine."""
    if settings.remote_embed.primary is not None or not settings.query_encoder.enabled:
        return None
    folder = model_folder(settings.embed.model)
    if folder is None:
        return None
    return ExportSlot(cache_root(settings) / folder_identity(folder), settings.embed.model)


def say(message: str) -> None:
    """One line for the user, on stderr (stdout may carry JSON)."""
    print(message, file=sys.stderr, flush=True)


# --- the query path --------------------------------------------------------------------------


def query_embedder(settings: Settings, local: Callable[[], Embedder]) -> Embedder:
    """The export of the local model when one is ready (no torch); else ``local()``, and the
    model is exported for the next search unless it was rejected."""
    slot = export_slot(settings)
    if slot is None:
        return local()
    encoder = open_export(slot, settings.embed.batch_size)
    if encoder is not None:
        return encoder
    embedder = local()
    if not slot.rejected and isinstance(embedder, LocalEmbedder):
        from genai_ingest.onnx_export import export

        export(slot, embedder, settings.query_encoder.min_cosine)
    return embedder


def open_export(slot: ExportSlot, batch_size: int) -> OnnxQueryEncoder | None:
    """The encoder of a ready export; a damaged one is discarded (None), never an error."""
    if not slot.ready:
        return None
    try:
        encoder = OnnxQueryEncoder(slot.folder, slot.model_id, batch_size)
        encoder.check()
    except Exception as exc:  # truncated, edited or foreign files: never fail a search
        from genai_ingest.onnx_export import discard

        say(f"query encoder: discarding the damaged export {slot.folder} ({exc!s:.200})")
        discard(slot)
        return None
    return encoder


def export_after_run(settings: Settings) -> None:
    """After a run that loaded the local model (torch is loaded already), export it once, so
    the next search starts without torch. A run that embedded nothing does nothing."""
    from genai_ingest.runtime import runtime_for

    if not settings.query_encoder.export_after_run:
        return
    embedder = vars(runtime_for(settings)).get("embedder")  # set only if the model was built
    slot = export_slot(settings) if isinstance(embedder, LocalEmbedder) else None
    if slot is not None and not slot.folder.exists():
        from genai_ingest.onnx_export import export

        export(slot, embedder, settings.query_encoder.min_cosine)
