"""Writing the query encoder's export (``genai_ingest.embed.query_encoder``), where torch and the
model are loaded already: torch's dynamo exporter, the model's fast tokenizer, a manifest.

Only a Transformer + mean/cls Pooling (+ Normalize) layout without a default prompt qualifies,
and an export is kept only if its vectors equal the model's on probe texts (cosine >=
``query_encoder.min_cosine``); otherwise the slot records why (``rejected.json``). Written into
``<key>.partial`` and renamed into place, under a lock that never waits for another process."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from genai_ingest.config import EmbedSettings
from genai_ingest.embed.encoders import pooling_mode
from genai_ingest.embed.export_lock import remove_folder, slot_lock
from genai_ingest.embed.local import LocalEmbedder
from genai_ingest.embed.query_encoder import (
    MANIFEST,
    MODEL,
    MODEL_INT8,
    REJECTED,
    TOKENIZER,
    ExportSlot,
    OnnxEncoder,
    say,
)

#: Compared between the model and its export: short, unicode, empty, code, beyond the window.
PROBES = (
    "history of the word processor",
    "Zürich café: naïve façade, 東京の天気は？ Привет, мир! 🙂",
    "",
    "?",
    "def area(r): return 3.14159 * r ** 2  # circle",
    " ".join(f"Section {i} lists figure {i * 7} and its footnote." for i in range(80)),
)


#: torch's TorchScript exporter first (2 s for all-MiniLM-L6-v2 here, but deprecated), then its
#: dynamo exporter (9 s), for a torch without the first or a model it gets wrong.
EXPORTERS = ("torchscript", "dynamo")
#: The least cosine between the int8 quantization's probe vectors and the model's.
INT8_MIN_COSINE = 0.95


def export(slot: ExportSlot, embedder: LocalEmbedder, min_cosine: float) -> None:
    """Export, verify and move into place, unless another process is at it or it is done. A
    failure leaves queries on sentence-transformers; it never fails the caller."""
    try:
        with slot_lock(slot.folder) as held:
            if held and not slot.folder.exists():
                _export_into(slot, embedder, min_cosine)
    except OSError as exc:  # disk full, read-only cache: not the model's fault, tried again later
        say(f"query encoder: export failed ({exc}); queries use sentence-transformers")


def export_in_child(slot: ExportSlot, embed: EmbedSettings, min_cosine: float) -> None:
    """``export`` in a spawned process: torch and the model (about 1 GB) are loaded there and
    given back when it exits, so a run or search on the ONNX backend never imports torch."""
    child = multiprocessing.get_context("spawn").Process(
        target=_export_model, args=(slot, embed, min_cosine), name="onnx-export"
    )
    child.start()
    child.join()


def _export_model(slot: ExportSlot, embed: EmbedSettings, min_cosine: float) -> None:
    export(slot, LocalEmbedder(embed), min_cosine)


def _export_into(slot: ExportSlot, embedder: LocalEmbedder, min_cosine: float) -> None:
    partial = slot.folder.with_name(slot.folder.name + ".partial")
    remove_folder(partial)  # left by an export that was killed (the lock is ours now)
    partial.mkdir(parents=True)
    reason = layout_problem(embedder.model)
    if reason is None:
        say(f"query encoder: exporting {slot.model_id} to ONNX once: {slot.folder}")
        try:
            reason = _export_verified(embedder, partial, min_cosine)
        except OSError:
            raise
        except Exception as exc:  # e.g. a tokenizer without a fast backend: recorded
            reason = f"export failed: {type(exc).__name__}: {exc!s:.300}"
    if reason:
        for path in list(partial.iterdir()):
            path.unlink()
        _write_json(partial / REJECTED, {"model": slot.model_id, "reason": reason})
        say(f"query encoder: {slot.model_id} stays on sentence-transformers ({reason})")
    partial.rename(slot.folder)


def layout_problem(model: Any) -> str | None:
    """Why a loaded SentenceTransformer is not Transformer + mean/cls Pooling (+ Normalize)
    without a default prompt; None when an export can reproduce it."""
    names = [type(module).__name__ for module in model]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return f"modules {' + '.join(names)}"
    if getattr(model, "default_prompt_name", None):
        return f"default prompt {model.default_prompt_name!r}"
    mode = pooling_mode(model[1].get_config_dict())
    return None if mode in ("mean", "cls") else f"pooling {mode}"


def _export_verified(embedder: LocalEmbedder, folder: Path, min_cosine: float) -> str | None:
    """Write the export of a qualifying model into ``folder``, trying each exporter until one
    gives the model's vectors; why none may be used, or None."""
    model = embedder.model
    tokenizer = model.tokenizer
    tokenizer.backend_tokenizer.save(str(folder / TOKENIZER))
    manifest = {
        "model": embedder.model_id,
        "dimension": embedder.dimension,
        "window": int(model.max_seq_length),
        "pooling": pooling_mode(model[1].get_config_dict()),
        "padding": {
            "pad_id": tokenizer.pad_token_id or 0,
            "pad_token": tokenizer.pad_token or "[PAD]",
            "pad_type_id": tokenizer.pad_token_type_id or 0,
            "direction": tokenizer.padding_side,
        },
    }
    _write_json(folder / MANIFEST, manifest)
    example = dict(tokenizer(["a short query", "a somewhat longer query, padded"], padding=True))
    expected, failures = embedder.embed(PROBES), []
    for exporter in EXPORTERS:
        try:
            _export_onnx(model[0].auto_model, example, folder / MODEL, exporter)
            vectors = OnnxEncoder(folder, embedder.model_id).embed(PROBES)
        except OSError:
            raise
        except Exception as exc:  # this exporter cannot handle the model: the next one may
            failures.append(f"{exporter}: {type(exc).__name__}: {exc!s:.200}")
            continue
        cosine = float((vectors * expected).sum(axis=1).min())
        if cosine >= min_cosine:
            probe = {"text": PROBES[0], "vector": vectors[0].tolist()}
            manifest |= {"exporter": exporter, "probe": probe}
            _write_json(folder / MANIFEST, manifest)
            _quantize(folder, embedder.model_id, expected)
            probe_int8 = OnnxEncoder(folder, embedder.model_id, int8=True).embed(PROBES[:1])[0]
            manifest["probe_int8"] = {"text": PROBES[0], "vector": probe_int8.tolist()}
            _write_json(folder / MANIFEST, manifest)
            return None
        failures.append(f"{exporter}: vectors differ on probe texts (cosine {cosine:.6f})")
    return "; ".join(failures)


def _quantize(folder: Path, model_id: str, expected: np.ndarray) -> None:
    """onnxruntime's dynamic int8 quantization of the export (weights per channel, VNNI on
    CPUs that have it); kept only if its probe vectors stay close to the model's
    (``INT8_MIN_COSINE``: quantization moves a vector by ~1%)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            folder / MODEL,
            folder / MODEL_INT8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": 1},  # FLOAT: shape inference misses some outputs
        )
    vectors = OnnxEncoder(folder, model_id, int8=True).embed(PROBES)
    cosine = float((vectors * expected).sum(axis=1).min())
    if cosine < INT8_MIN_COSINE:
        raise ValueError(f"int8 quantization moves the vectors too far (cosine {cosine:.4f})")


def _export_onnx(model: Any, example: dict[str, Any], path: Path, exporter: str) -> None:
    """One of torch's exporters, batch and sequence dynamic, from a CPU copy if need be."""
    import torch

    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in example]
    on_cpu = next(model.parameters()).device.type == "cpu"

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model if on_cpu else copy.deepcopy(model).cpu()

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
            return out.last_hidden_state

    inputs = {name: torch.tensor(example[name], dtype=torch.int64) for name in names}
    module, output = LastHidden().eval(), ["last_hidden_state"]
    with torch.no_grad(), _quiet():
        if exporter == "torchscript":  # keyword arguments inside: transformers 5 accepts those
            axes = {name: {0: "batch", 1: "sequence"} for name in [*names, *output]}
            torch.onnx.export(
                module,
                tuple(inputs.values()),
                str(path),
                input_names=names,
                output_names=output,
                dynamic_axes=axes,
                dynamo=False,
            )
            return
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
        program = torch.onnx.export(
            module,
            (),
            kwargs=inputs,
            input_names=names,
            output_names=output,
            dynamic_shapes={name: {0: batch, 1: seq} for name in names},
            dynamo=True,
        )
        program.save(str(path), external_data=False)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's warnings, log lines and prints kept off the user's terminal."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
