"""Which encoder object embeds, for a run and for a query: the ONNX export of the local model
(fp32 or int8, ``query_encoder.OnnxEncoder``), sentence-transformers (torch), or a remote
endpoint. Queries always use the encoder the index records (``encoders.EncoderSpec``), so a
query vector is of the same kind as the document vectors it is compared with."""

from __future__ import annotations

import json
from collections.abc import Callable

from genai_ingest.config import Settings
from genai_ingest.embed.encoders import EncoderSpec
from genai_ingest.embed.export_lock import wait_for_exporter
from genai_ingest.embed.local import Embedder, LocalEmbedder
from genai_ingest.embed.query_encoder import (
    REJECTED,
    ExportSlot,
    OnnxEncoder,
    export_slot,
    model_slot,
    open_export,
)
from genai_ingest.failures.errors import MissingDependency, Stage


def ingest_embedder(settings: Settings, spec: EncoderSpec) -> Embedder:
    """The local embedder of a run: the ONNX export (made once, on first use, by torch in a
    process of its own) for ``embed.backend = "onnx"``, else sentence-transformers."""
    if settings.embed.backend == "torch":
        return LocalEmbedder(settings.embed, spec.id)
    slot = model_slot(settings)
    if slot is None:
        raise MissingDependency(
            f"{settings.embed.model}: no local copy of the model to export", stage=Stage.EMBED
        )
    encoder = _ready_export(slot, settings, spec)
    if encoder is None:
        raise MissingDependency(
            f"no ONNX export of {settings.embed.model} ({_rejection(slot)}): set "
            "embed.backend=torch (GENAI_INGEST_EMBED__BACKEND=torch)",
            stage=Stage.EMBED,
        )
    return encoder


def query_embedder(
    settings: Settings, spec: EncoderSpec, torch_model: Callable[[], Embedder]
) -> Embedder:
    """What embeds queries for an index of ``spec``: the export when ready (no torch); else
    ``torch_model()``, exporting the model for the next search. An int8 index always uses the
    int8 export (torch cannot give its vectors)."""
    slot = export_slot(settings) if not spec.int8 else model_slot(settings)
    if slot is None:
        return torch_model()
    encoder = open_export(slot, settings.embed.batch_size, spec.int8)
    if encoder is None and spec.int8:
        encoder = _ready_export(slot, settings, spec)
    if encoder is not None:
        encoder.model_id = spec.id
        return encoder
    if spec.int8:
        raise MissingDependency(
            f"no int8 ONNX export of {settings.embed.model} ({_rejection(slot)})",
            stage=Stage.EMBED,
        )
    model = torch_model()
    if not slot.rejected and isinstance(model, LocalEmbedder):
        from genai_ingest.embed.onnx_export import export

        export(slot, model, settings.query_encoder.min_cosine)
    return model


def _ready_export(slot: ExportSlot, settings: Settings, spec: EncoderSpec) -> OnnxEncoder | None:
    """The export of ``slot``, made now (by torch, in a process of its own) if there is none
    yet; if another process is making it, it is waited for."""
    encoder = open_export(slot, settings.embed.batch_size, spec.int8)
    if encoder is None and not slot.rejected:
        from genai_ingest.embed.onnx_export import export_in_child

        export_in_child(slot, settings.embed, settings.query_encoder.min_cosine)
        wait_for_exporter(slot.folder, settings.query_encoder.export_wait_s)
        encoder = open_export(slot, settings.embed.batch_size, spec.int8)
    if encoder is not None:
        encoder.model_id = spec.id
    return encoder


def _rejection(slot: ExportSlot) -> str:
    if slot.rejected:
        return json.loads((slot.folder / REJECTED).read_text(encoding="utf-8"))["reason"]
    return "the export is not ready"


def export_after_run(settings: Settings, embedder: Embedder | None) -> None:
    """After a run that loaded the model with torch (``embedder``, None when the run built
    none), export it once, so the next search starts without torch. A run that embedded
    nothing, or ran the export, does nothing."""
    if not settings.query_encoder.export_after_run:
        return
    slot = export_slot(settings) if isinstance(embedder, LocalEmbedder) else None
    if slot is not None and not slot.folder.exists():
        from genai_ingest.embed.onnx_export import export

        export(slot, embedder, settings.query_encoder.min_cosine)
