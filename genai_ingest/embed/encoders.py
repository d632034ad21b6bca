"""Which encoder makes the vectors (``EncoderSpec``, recorded as the index's model id), and
window vectors pooled from the chunk's own forward pass ("late chunking").

A chunk's sentence windows need not be encoded again: the model (mean pooling) already gives
one contextual vector per token of the chunk, and a window's vector is the mean of the tokens
it spans (Günther et al. 2024, arXiv 2409.04701). ``pool_unit`` does that for one chunk from its
token states and offsets; the ONNX and torch encoders both feed it.

Vectors of an int8 encoder or of pooled windows are not those of the fp32 model with separately
encoded windows, so the spec is part of the index identity: ``all-MiniLM-L6-v2+int8+late``. A
bare model id is the fp32 model with windows encoded separately (every index built before)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from genai_ingest.config import Settings

INT8 = "+int8"
#: Window methods (``embed.window_pooling``) and their suffix in the encoder id.
WINDOW_SUFFIXES = {"separate": "", "late": "+late", "windows_only": "+wonly"}


@dataclass(frozen=True)
class EncoderSpec:
    """A model, its precision class (fp32 or int8: torch fp16 and an fp32 ONNX export give the
    fp32 model's vectors) and how a chunk's window vectors are made (``WINDOW_SUFFIXES``)."""

    model: str
    int8: bool = False
    windows: str = "separate"

    @property
    def id(self) -> str:
        return self.model + (INT8 if self.int8 else "") + WINDOW_SUFFIXES[self.windows]

    @property
    def late_windows(self) -> bool:
        """Window vectors pooled from the chunk's pass (their cache keys depend on the chunk)."""
        return self.windows == "late"

    @classmethod
    def parse(cls, encoder_id: str) -> EncoderSpec:
        windows = next(
            (w for w, suffix in WINDOW_SUFFIXES.items() if suffix and encoder_id.endswith(suffix)),
            "separate",
        )
        rest = encoder_id.removesuffix(WINDOW_SUFFIXES[windows])
        return cls(rest.removesuffix(INT8), rest.endswith(INT8), windows)

    @classmethod
    def of(cls, settings: Settings) -> EncoderSpec:
        """What ``settings`` embed with. A remote endpoint or the GPU deployment runs the plain
        model with windows encoded separately (torch on CUDA has compute to spare)."""
        remote = settings.remote_embed.primary
        if remote is not None:
            return cls(remote.model)
        embed = settings.embed
        if settings.embed_deployment:
            return cls(embed.model)
        windows = embed.window_pooling if settings.chunk.window_tokens > 0 else "separate"
        return cls(embed.model, embed.backend == "onnx" and embed.precision == "int8", windows)

    def describe(self) -> str:
        precision = "int8 (ONNX)" if self.int8 else "fp32"
        windows = {
            "separate": "windows encoded separately",
            "late": "windows pooled from the chunk pass",
            "windows_only": "windows encoded, the chunk vector their mean (no chunk pass)",
        }[self.windows]
        return f"{self.model}, {precision}, {windows}"


@dataclass(frozen=True)
class EmbedUnit:
    """What one chunk needs embedded: its text, then its windows (substrings of the text)."""

    text: str
    windows: tuple[str, ...] = ()


def window_spans(text: str, windows: Sequence[str]) -> list[tuple[int, int]] | None:
    """Character span of each window in ``text``, in order; None if one is not found."""
    spans, cursor = [], 0
    for window in windows:
        start = text.find(window, cursor)
        if start < 0:
            start = text.find(window)
            if start < 0:
                return None
        spans.append((start, start + len(window)))
        cursor = start + 1
    return spans


def pool_unit(
    states: np.ndarray, offsets: np.ndarray, special: np.ndarray, spans: Sequence[tuple[int, int]]
) -> np.ndarray | None:
    """Rows for one chunk from its token states ``(tokens, dim)``: the mean of every token (the
    model's own pooling), then per window span the mean of the non-special tokens inside it;
    L2-normalised. None when a window spans no token (the caller encodes it separately)."""
    rows = [states.mean(axis=0)]
    for start, end in spans:
        inside = (~special) & (offsets[:, 0] >= start) & (offsets[:, 1] <= end)
        if not inside.any():
            return None
        rows.append(states[inside].mean(axis=0))
    matrix = np.stack(rows)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.clip(norms, 1e-12, None)).astype(np.float32)


def embed_separately(embed: object, units: Sequence[EmbedUnit]) -> list[np.ndarray]:
    """Rows of each unit by encoding its text and each window as texts of their own."""
    texts = [t for unit in units for t in (unit.text, *unit.windows)]
    vectors = embed.embed(texts)  # type: ignore[attr-defined]
    rows, start = [], 0
    for unit in units:
        end = start + 1 + len(unit.windows)
        rows.append(np.asarray(vectors[start:end], np.float32))
        start = end
    return rows


def embed_from_windows(embed: object, units: Sequence[EmbedUnit]) -> list[np.ndarray]:
    """Rows of each unit without a whole-chunk pass: its windows encoded, and the chunk vector
    the normalised mean of theirs (a unit without windows: its text encoded)."""
    texts = [t for unit in units for t in (unit.windows or (unit.text,))]
    vectors = np.asarray(embed.embed(texts), np.float32)  # type: ignore[attr-defined]
    rows, start = [], 0
    for unit in units:
        end = start + (len(unit.windows) or 1)
        part = vectors[start:end]
        if unit.windows:
            mean = part.mean(axis=0)
            part = np.vstack([mean / max(float(np.linalg.norm(mean)), 1e-12), part])
        rows.append(part)
        start = end
    return rows


def embed_units(embedder: object, units: Sequence[EmbedUnit], windows: str) -> list[np.ndarray]:
    """Rows of every unit (chunk vector, then its windows') as ``windows`` says: pooled from
    one pass (``late``: the embedder's ``embed_pooled``), windows only, or each text encoded."""
    if windows == "windows_only":
        return embed_from_windows(embedder, units)
    if windows != "late":
        return embed_separately(embedder, units)
    pooled = getattr(embedder, "embed_pooled", None)
    if pooled is None:
        raise ValueError(f"{type(embedder).__name__} cannot pool windows from the chunk pass")
    return pooled(units)


def length_order(lengths: Sequence[int]) -> list[int]:
    """Longest first, so that each batch pads to texts of about its own length."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def pooling_mode(config: dict[str, Any]) -> str:
    """The Pooling module's mode from its config: ``pooling_mode``, or the older
    ``pooling_mode_*`` flags."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return mode if isinstance(mode, str) else "+".join(mode)
    modes = "+".join(k.removeprefix("pooling_mode_") for k, on in config.items() if on is True)
    return {"cls_token": "cls", "mean_tokens": "mean"}.get(modes, modes)
