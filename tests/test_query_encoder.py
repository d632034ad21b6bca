"""The torch-free query encoder: an ONNX export of the real all-MiniLM-L6-v2 gives the vectors
of sentence-transformers; layouts it cannot reproduce, damaged exports and a busy lock fall
back to sentence-transformers, never to an error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from genai_ingest.config import Settings
from genai_ingest.embed.encoder_choice import ingest_embedder, query_embedder
from genai_ingest.embed.encoders import EncoderSpec
from genai_ingest.embed.export_lock import slot_lock
from genai_ingest.embed.local import LocalEmbedder, resolve_model_path
from genai_ingest.embed.onnx_export import _export_into, export
from genai_ingest.embed.query_encoder import (
    MANIFEST,
    MODEL,
    ExportSlot,
    OnnxEncoder,
    export_slot,
    open_export,
)

FP32 = EncoderSpec("all-MiniLM-L6-v2")

LONG = " ".join(
    f"Paragraph {i}: the committee reviewed clause {i} of the lease." for i in range(60)
)
TEXTS = [
    "history of the word processor",
    "What is the notice period for terminating the lease?",
    "Zürich, Köln and Malmö: naïve café façades",
    "東京の天気は晴れです",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "emoji 🙂🚀 and symbols ©®™ ± ∑",
    "",
    " ",
    "\n\t",
    "?",
    "a",
    "SELECT * FROM invoices WHERE total > 1000;",
    "def area(r): return 3.14159 * r ** 2",
    "https://example.com/a/b?c=d#e",
    "ALL CAPS HEADLINE ABOUT QUARTERLY RESULTS",
    "numbers 3.14159 2.71828 1.41421 42",
    LONG,  # beyond the 256-token window: truncated like sentence-transformers does
    LONG[::-1],
    "short",
]


def settings_for(cache: Path, model: str | None = None) -> Settings:
    embed = {"model": model} if model else {}
    return Settings(query_encoder={"cache_dir": cache}, embed=embed)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, local_embedder: LocalEmbedder) -> Settings:
    """Settings whose cache holds a verified export of the default model (made once)."""
    settings = settings_for(tmp_path_factory.mktemp("query-encoders"))
    slot = export_slot(settings)
    assert slot is not None
    export(slot, local_embedder, settings.query_encoder.min_cosine)
    assert slot.ready and not slot.rejected
    assert json.loads((slot.folder / MANIFEST).read_text())["exporter"] == "torchscript"
    return settings


def test_vectors_equal_sentence_transformers(
    exported: Settings, local_embedder: LocalEmbedder
) -> None:
    slot = export_slot(exported)
    assert slot is not None
    assert len(local_embedder.tokenizer(LONG)["input_ids"]) > 256
    encoder = OnnxEncoder(slot.folder, exported.embed.model, batch_size=8)  # 3 batches
    got, expected = encoder.embed(TEXTS), local_embedder.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * expected).sum(axis=1).min() >= 0.9999
    assert encoder.embed([]).shape == (0, 384)


def test_dynamo_exporter_gives_the_same_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_embedder: LocalEmbedder
) -> None:
    """The exporter used where torch no longer has the TorchScript one (or it gets a model
    wrong)."""
    from genai_ingest.embed import onnx_export

    monkeypatch.setattr(onnx_export, "EXPORTERS", ("dynamo",))
    slot = export_slot(settings_for(tmp_path))
    assert slot is not None
    export(slot, local_embedder, 0.9999)
    assert json.loads((slot.folder / MANIFEST).read_text())["exporter"] == "dynamo"
    got = OnnxEncoder(slot.folder, slot.model_id).embed(TEXTS)
    assert (got * local_embedder.embed(TEXTS)).sum(axis=1).min() >= 0.9999


def test_a_run_exports_in_a_child_and_never_imports_torch(tmp_path: Path) -> None:
    """The first run on a machine exports the model in a process of its own: torch's memory
    is given back when it exits, and the run's process embeds with onnxruntime only."""
    code = f"""
import sys
from genai_ingest.config import Settings
from genai_ingest.embed.encoder_choice import ingest_embedder
from genai_ingest.embed.encoders import EncoderSpec
from genai_ingest.embed.query_encoder import OnnxEncoder
settings = Settings(query_encoder={{"cache_dir": {str(tmp_path)!r}}})
embedder = ingest_embedder(settings, EncoderSpec.of(settings))
assert isinstance(embedder, OnnxEncoder) and embedder.int8, embedder
assert embedder.embed(["hello"]).shape == (1, 384)
heavy = {{"torch", "transformers", "sentence_transformers"}} & set(sys.modules)
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(tmp_path.rglob("model.int8.onnx")), "the child wrote the export"


def test_search_path_imports_no_torch(exported: Settings) -> None:
    """The query path, in a fresh interpreter: the export answers, torch is never imported."""
    code = f"""
import sys
from genai_ingest.config import Settings
from genai_ingest.embed.encoder_choice import query_embedder
from genai_ingest.embed.encoders import EncoderSpec
from genai_ingest.embed.query_encoder import OnnxEncoder
settings = Settings.model_validate_json({exported.model_dump_json()!r})
for int8 in (False, True):
    embedder = query_embedder(settings, EncoderSpec("all-MiniLM-L6-v2", int8), lambda: 1 / 0)
    assert isinstance(embedder, OnnxEncoder) and embedder.int8 is int8, embedder
    assert embedder.embed(["hello"]).shape == (1, 384)
heavy = {{"torch", "transformers", "sentence_transformers", "sklearn"}} & set(sys.modules)
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_busy_lock_skips_the_export(tmp_path: Path, local_embedder: LocalEmbedder) -> None:
    slot = export_slot(settings_for(tmp_path))
    assert slot is not None
    with slot_lock(slot.folder) as held:
        assert held
        export(slot, local_embedder, 0.9999)  # another process's export is never waited for
    assert not slot.folder.exists()


def test_a_run_waits_for_the_export_another_process_is_making(
    tmp_path: Path, local_embedder: LocalEmbedder
) -> None:
    """Two first runs at once: the second finds the export's lock held, waits for it and
    embeds with the finished export (it used to fail as "the export is not ready")."""
    settings = settings_for(tmp_path)
    slot = export_slot(settings)
    assert slot is not None
    spec = EncoderSpec("all-MiniLM-L6-v2", int8=True, windows="windows_only")
    with slot_lock(slot.folder) as held:  # the other run's export, under its lock
        assert held
        waiting = ThreadPoolExecutor(1).submit(ingest_embedder, settings, spec)
        _export_into(slot, local_embedder, 0.9999)
    encoder = waiting.result(timeout=300)
    assert isinstance(encoder, OnnxEncoder) and encoder.int8 and slot.ready


def _copy_model(tmp_path: Path) -> Path:
    """The default model folder, its large files linked."""
    source, target = Path(resolve_model_path("all-MiniLM-L6-v2")), tmp_path / "model"
    shutil.copytree(source, target, copy_function=_link_if_large)
    return target


def _link_if_large(src: str, dst: str) -> None:
    if Path(src).stat().st_size > 1 << 20:
        Path(dst).symlink_to(src)
    else:
        shutil.copy2(src, dst)


def _max_pooling(model: Path) -> str:
    config = {"word_embedding_dimension": 384, "pooling_mode_max_tokens": True}
    (model / "1_Pooling" / "config.json").write_text(json.dumps(config))
    return "pooling max"


def _dense_layer(model: Path) -> str:
    from sentence_transformers.base.modules.dense import Dense

    (model / "3_Dense").mkdir()
    Dense(384, 64).save(str(model / "3_Dense"))
    modules = json.loads((model / "modules.json").read_text())
    modules.append(
        {
            "idx": 3,
            "name": "3",
            "path": "3_Dense",
            "type": "sentence_transformers.base.modules.dense.Dense",
        }
    )
    (model / "modules.json").write_text(json.dumps(modules))
    return "modules Transformer + Pooling + Normalize + Dense"


@pytest.mark.parametrize("alter", [_max_pooling, _dense_layer])
def test_layout_it_cannot_reproduce_stays_on_sentence_transformers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alter: object
) -> None:
    model = _copy_model(tmp_path)
    reason = alter(model)  # type: ignore[operator]
    settings = settings_for(tmp_path / "cache", str(model))
    embedder = query_embedder(
        settings, EncoderSpec(str(model)), lambda: LocalEmbedder(settings.embed)
    )
    assert isinstance(embedder, LocalEmbedder)
    slot = export_slot(settings)
    assert slot is not None and slot.rejected and not slot.ready
    assert reason in json.loads((slot.folder / "rejected.json").read_text())["reason"]
    assert "stays on sentence-transformers" in capsys.readouterr().err
    again = query_embedder(
        settings, EncoderSpec(str(model)), lambda: embedder
    )  # recorded: not tried again
    assert again is embedder and capsys.readouterr().err == ""


def _copy_export(exported: Settings, cache: Path) -> ExportSlot:
    slot = export_slot(exported)
    assert slot is not None
    copy = ExportSlot(cache / slot.folder.name, slot.model_id)
    shutil.copytree(slot.folder, copy.folder)
    return copy


def _truncate(folder: Path) -> None:
    model = folder / MODEL
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def _other_probe(folder: Path) -> None:  # as if the weights had changed since verification
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["probe"]["vector"] = list(-np.asarray(manifest["probe"]["vector"]))
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _garbage_manifest(folder: Path) -> None:
    (folder / MANIFEST).write_text("{not json")


@pytest.mark.parametrize("damage", [_truncate, _other_probe, _garbage_manifest])
def test_damaged_export_is_discarded(
    exported: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: object
) -> None:
    slot = _copy_export(exported, tmp_path)
    damage(slot.folder)  # type: ignore[operator]
    assert open_export(slot, 32) is None
    assert "discarding the damaged export" in capsys.readouterr().err
    assert not slot.folder.exists()


def test_search_after_damage_falls_back_and_exports_again(
    exported: Settings, tmp_path: Path, local_embedder: LocalEmbedder
) -> None:
    slot = _copy_export(exported, tmp_path)
    _truncate(slot.folder)
    partial = slot.folder.with_name(slot.folder.name + ".partial")
    partial.mkdir()  # left by an exporter that was killed
    (partial / MODEL).write_bytes(b"half")
    settings = settings_for(tmp_path)
    assert query_embedder(settings, FP32, lambda: local_embedder) is local_embedder  # this search
    assert not partial.exists()
    encoder = query_embedder(settings, FP32, lambda: 1 / 0)  # the next one: no torch
    assert isinstance(encoder, OnnxEncoder)
    vectors = encoder.embed(TEXTS[:3])
    assert (vectors * local_embedder.embed(TEXTS[:3])).sum(axis=1).min() >= 0.9999


def test_remote_endpoint_and_disabled_encoder_have_no_slot(tmp_path: Path) -> None:
    remote = {"primary": {"url": "http://127.0.0.1:9/v1", "model": "m"}}
    assert export_slot(Settings(remote_embed=remote)) is None
    assert export_slot(Settings(query_encoder={"enabled": False})) is None
    assert export_slot(settings_for(tmp_path, str(tmp_path / "no-model"))) is None
    assert export_slot(settings_for(tmp_path, "nobody/no-such-model")) is None
