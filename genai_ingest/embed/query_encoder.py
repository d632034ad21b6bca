"""Torch-free query encoding: an ONNX export of the local sentence-transformers model, run with
onnxruntime, the Rust ``tokenizers`` and numpy pooling, so ``search`` and ``eval`` import no
torch, transformers or sentence-transformers.

An export lives in a per-user cache under a key of the model folder's identity, written once
by ``genai_ingest.embed.onnx_export`` (after a ``run`` that loaded the model, or by the first search
that finds none). A model it cannot reproduce is recorded as rejected there and its queries
keep sentence-transformers; a damaged export is discarded and made again."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from genai_ingest.config import Settings
from genai_ingest.embed.encoders import (
    EmbedUnit,
    embed_separately,
    length_order,
    pool_unit,
    window_spans,
)
from genai_ingest.embed.export_lock import discard
from genai_ingest.embed.local import resolve_model_path

#: Bump when the export or its manifest changes: older exports are then made again.
EXPORT_FORMAT = "2"  # 2: with an int8 quantization
MODEL, MODEL_INT8, TOKENIZER, MANIFEST, REJECTED = (
    "model.onnx",
    "model.int8.onnx",
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


class OnnxEncoder:
    """The ``Embedder`` of an export (fp32, or its int8 quantization): L2-normalised float32
    vectors, like ``LocalEmbedder``, and window vectors pooled from the chunk pass."""

    def __init__(self, folder: Path, model_id: str, batch_size: int = 32, int8: bool = False):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        self.model_id, self.batch_size, self.int8 = model_id, batch_size, int8
        self.dimension = int(self.manifest["dimension"])
        self.max_tokens = int(self.manifest["window"])
        self.fast_tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
        self.fast_tokenizer.enable_truncation(int(self.manifest["window"]))
        self.fast_tokenizer.no_padding()  # padded per batch (right), by ``_passes``
        self.pad = self.manifest["padding"]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(
            str(folder / (MODEL_INT8 if int8 else MODEL)),
            options,
            providers=["CPUExecutionProvider"],
        )
        self.inputs = [i.name for i in self.session.get_inputs()]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), np.float32)
        for batch, _, hidden, mask in self._passes(list(texts)):
            out[batch] = normalised(pooled(hidden, mask, self.manifest["pooling"]))
        return out

    def embed_pooled(self, units: Sequence[EmbedUnit]) -> list[np.ndarray]:
        """Each unit's rows from one pass over its text: the chunk vector, then its windows
        pooled from the tokens they span (``encoders.pool_unit``). A window that cannot be
        located, or a model that does not mean-pool, is encoded separately."""
        rows: list[np.ndarray | None] = [None] * len(units)
        spans = [window_spans(u.text, u.windows) for u in units]
        if self.manifest["pooling"] == "mean":
            for batch, encodings, hidden, _ in self._passes([u.text for u in units]):
                for row, (i, encoding) in enumerate(zip(batch, encodings, strict=True)):
                    if spans[i] is not None:
                        n = len(encoding.ids)
                        rows[i] = pool_unit(
                            hidden[row, :n],
                            np.asarray(encoding.offsets[:n]),
                            np.asarray(encoding.special_tokens_mask[:n], bool),
                            spans[i],
                        )
        rest = [i for i, r in enumerate(rows) if r is None]
        for i, r in zip(rest, embed_separately(self, [units[i] for i in rest]), strict=True):
            rows[i] = r
        return rows  # type: ignore[return-value]

    def _passes(
        self, texts: list[str]
    ) -> Iterator[tuple[list[int], list[Any], np.ndarray, np.ndarray]]:
        """(positions, encodings, last hidden state, attention mask) per batch, longest first."""
        encodings = self.fast_tokenizer.encode_batch(texts) if texts else []
        order = length_order([len(e.ids) for e in encodings])
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            part = [encodings[i] for i in batch]
            width = max(len(e.ids) for e in part)

            def padded(rows: list[list[int]], value: int, width: int = width) -> np.ndarray:
                return np.array([r + [value] * (width - len(r)) for r in rows], np.int64)

            mask = padded([e.attention_mask for e in part], 0)
            feeds = {
                "input_ids": padded([e.ids for e in part], self.pad["pad_id"]),
                "attention_mask": mask,
                "token_type_ids": padded([e.type_ids for e in part], self.pad["pad_type_id"]),
            }
            [hidden] = self.session.run(None, {name: feeds[name] for name in self.inputs})
            yield batch, part, hidden, mask

    def check(self) -> None:
        """Refuse an export that changed since it was verified: its probe vector differs."""
        probe = self.manifest["probe_int8" if self.int8 else "probe"]
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
    """The slot of the configured local model when queries may use it; None for a remote
    endpoint, with the query encoder off, or when the model folder is not on this machine."""
    return model_slot(settings) if settings.query_encoder.enabled else None


def model_slot(settings: Settings) -> ExportSlot | None:
    """The slot of the configured local model; None for a remote endpoint, or when the model
    folder is not on this machine."""
    if settings.remote_embed.primary is not None:
        return None
    folder = model_folder(settings.embed.model)
    if folder is None:
        return None
    return ExportSlot(cache_root(settings) / folder_identity(folder), settings.embed.model)


def say(message: str) -> None:
    """One line for the user, on stderr (stdout may carry JSON)."""
    print(message, file=sys.stderr, flush=True)


def open_export(slot: ExportSlot, batch_size: int, int8: bool = False) -> OnnxEncoder | None:
    """The encoder of a ready export; a damaged one is discarded (None), never an error."""
    if not slot.ready:
        return None
    try:
        encoder = OnnxEncoder(slot.folder, slot.model_id, batch_size, int8=int8)
        encoder.check()
    except Exception as exc:  # truncated, edited or foreign files: never fail a search
        say(f"query encoder: discarding the damaged export {slot.folder} ({exc!s:.200})")
        discard(slot.folder)
        return None
    return encoder
