"""The encoder of a run (issue 19): window vectors pooled from the chunk's own pass equal a
reference computation with the real model, the int8 export stays close to the model, the index
records the encoder and refuses another, and queries use the encoder the index records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genai_ingest.config import EmbedSettings, Settings
from genai_ingest.embed.encoder_choice import ingest_embedder
from genai_ingest.embed.encoders import EmbedUnit, EncoderSpec, embed_units, window_spans
from genai_ingest.embed.local import LocalEmbedder, resolve_model_path
from genai_ingest.embed.query_encoder import OnnxEncoder
from genai_ingest.failures.errors import ModelMismatch

SENTENCES = (
    "The committee met on Tuesday in the old library.",
    "It reviewed every clause of the lease, one by one.",
    "The notice period for terminating the lease is ninety days.",
    "Überraschend stimmten alle zu — 東京 included — and adjourned at noon.",
)
TEXT = " ".join(SENTENCES)
UNIT = EmbedUnit(TEXT, (" ".join(SENTENCES[:2]), " ".join(SENTENCES[2:])))


def reference_rows(unit: EmbedUnit) -> np.ndarray:
    """The chunk vector and window vectors computed by hand with transformers: one forward
    pass, mean of all tokens, and per window the mean of the tokens inside its span."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path("all-MiniLM-L6-v2")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    batch = tokenizer(unit.text, return_offsets_mapping=True, return_tensors="pt")
    offsets = batch.pop("offset_mapping")[0].numpy()
    with torch.no_grad():
        states = model(**batch).last_hidden_state[0].numpy()
    rows = [states.mean(axis=0)]
    cursor = 0
    for window in unit.windows:
        start = unit.text.index(window, cursor)
        end, cursor = start + len(window), start + 1
        inside = [
            i
            for i, (a, b) in enumerate(offsets)
            if b > a and a >= start and b <= end  # special tokens have empty offsets
        ]
        rows.append(states[inside].mean(axis=0))
    rows = np.stack(rows)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def qe_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(query_encoder={"cache_dir": tmp_path_factory.mktemp("qe")})


def test_pooled_windows_match_a_reference_computation(
    qe_settings: Settings, local_embedder: LocalEmbedder
) -> None:
    expected = reference_rows(UNIT)
    fp32 = ingest_embedder(qe_settings, EncoderSpec("all-MiniLM-L6-v2", windows="late"))
    assert isinstance(fp32, OnnxEncoder) and not fp32.int8
    for embedder in (fp32, local_embedder):
        [rows] = embed_units(embedder, [UNIT], "late")
        assert rows.shape == (3, 384) and rows.dtype == np.float32
        assert (rows * expected).sum(axis=1).min() >= 0.9999, type(embedder).__name__
    # the chunk row is the model's own sentence vector
    assert float(expected[0] @ local_embedder.embed([TEXT])[0]) >= 0.9999
    # a pooled window is not the window encoded on its own (it has the chunk's context)
    separate = local_embedder.embed(list(UNIT.windows))
    assert (expected[1:] * separate).sum(axis=1).max() < 0.99


def test_int8_export_stays_close_and_is_its_own_encoder(qe_settings: Settings) -> None:
    default = EncoderSpec("all-MiniLM-L6-v2", int8=True, windows="windows_only")
    assert EncoderSpec.of(qe_settings) == default
    spec = EncoderSpec.of(
        qe_settings.model_copy(update={"embed": EmbedSettings(window_pooling="late")})
    )
    assert spec == EncoderSpec("all-MiniLM-L6-v2", int8=True, windows="late")
    assert spec.id == "all-MiniLM-L6-v2+int8+late" and EncoderSpec.parse(spec.id) == spec
    int8 = ingest_embedder(qe_settings, spec)
    assert isinstance(int8, OnnxEncoder) and int8.int8 and int8.model_id == spec.id
    [rows] = embed_units(int8, [UNIT], "late")
    cosine = (rows * reference_rows(UNIT)).sum(axis=1)
    assert cosine.min() >= 0.95 and cosine.max() < 0.9999  # close, but not the fp32 vectors


def test_windows_not_in_the_text_are_encoded_separately(
    qe_settings: Settings, local_embedder: LocalEmbedder
) -> None:
    unit = EmbedUnit(TEXT, ("a window that is not in the chunk at all",))
    assert window_spans(unit.text, unit.windows) is None
    fp32 = ingest_embedder(qe_settings, EncoderSpec("all-MiniLM-L6-v2", windows="late"))
    [rows] = embed_units(fp32, [unit], "late")
    assert float(rows[1] @ local_embedder.embed(list(unit.windows))[0]) >= 0.9999


def test_windows_only_encodes_the_windows_and_pools_the_chunk_from_them(
    qe_settings: Settings, local_embedder: LocalEmbedder
) -> None:
    spec = EncoderSpec.of(
        qe_settings.model_copy(update={"embed": EmbedSettings(window_pooling="windows_only")})
    )
    assert spec.id == "all-MiniLM-L6-v2+int8+wonly" and EncoderSpec.parse(spec.id) == spec
    fp32 = ingest_embedder(qe_settings, EncoderSpec("all-MiniLM-L6-v2", windows="windows_only"))
    lone = EmbedUnit("A chunk short enough to have no windows.")
    rows, alone = embed_units(fp32, [UNIT, lone], "windows_only")
    windows = local_embedder.embed(list(UNIT.windows))
    assert rows.shape == (3, 384) and (rows[1:] * windows).sum(axis=1).min() >= 0.9999
    mean = windows.mean(axis=0)
    assert float(rows[0] @ (mean / np.linalg.norm(mean))) >= 0.9999
    assert (
        alone.shape == (1, 384) and float(alone[0] @ local_embedder.embed([lone.text])[0]) > 0.9999
    )


def test_a_remote_endpoint_or_gpu_deployment_records_the_plain_model() -> None:
    remote = {"primary": {"url": "http://127.0.0.1:9/v1", "model": "m"}}
    assert EncoderSpec.of(Settings(remote_embed=remote)).id == "m"
    assert EncoderSpec.of(Settings(embed_deployment="embed/embed-gpu")).id == "all-MiniLM-L6-v2"
    torch_late = Settings(embed=EmbedSettings(backend="torch", window_pooling="late"))
    assert EncoderSpec.of(torch_late).id == "all-MiniLM-L6-v2+late"
    no_windows = Settings(chunk={"window_tokens": 0}, embed={"window_pooling": "late"})
    assert EncoderSpec.of(no_windows).id == "all-MiniLM-L6-v2+int8"


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="no CUDA device: the GPU path needs one"
)
def test_gpu_path_runs_torch_in_fp16() -> None:
    embedder = LocalEmbedder(EmbedSettings(device="cuda"))
    assert embedder.device.startswith("cuda")
    assert next(embedder.model.parameters()).dtype.__str__() == "torch.float16"
    [rows] = embed_units(embedder, [UNIT], "late")
    assert (rows * reference_rows(UNIT)).sum(axis=1).min() >= 0.999


def test_sqlite_store_refuses_another_encoder(tmp_path: Path, qe_settings: Settings) -> None:
    """An index built by the fp32 model (every index before issue 19) refuses an int8 run and
    an int8 query; the message names both encoders and the way out."""
    from genai_ingest.run.runtime import Runtime

    settings = qe_settings.model_copy(update={"data_dir": tmp_path})
    old = Runtime(
        settings.model_copy(
            update={"embed": EmbedSettings(precision="fp32", window_pooling="separate")}
        )
    )
    old.store.ensure_index("all-MiniLM-L6-v2", 384)
    with pytest.raises(ModelMismatch) as refused:
        Runtime(settings).open()
    message = refused.value.reason
    assert "all-MiniLM-L6-v2+int8+wonly" in message and "fp32" in message
    assert "embed.precision=fp32" in message and "window_pooling=separate" in message


def test_search_refuses_another_encoder_and_queries_use_the_index_encoder(
    tmp_path: Path, qe_settings: Settings
) -> None:
    from genai_ingest.run.runtime import Runtime
    from genai_ingest.search.query import search_many

    settings = qe_settings.model_copy(update={"data_dir": tmp_path})
    Runtime(settings).open()  # an int8 index
    rt = Runtime(settings)
    assert isinstance(rt.query_embedder, OnnxEncoder) and rt.query_embedder.int8
    assert rt.query_embedder.model_id == rt.store.index_identity()[0]
    fp32 = settings.model_copy(
        update={"embed": EmbedSettings(precision="fp32", window_pooling="separate")}
    )
    with pytest.raises(ModelMismatch, match=r"built by encoder all-MiniLM-L6-v2\+int8\+wonly "):
        search_many(fp32, ["notice period"])


@pytest.mark.elasticsearch
def test_elasticsearch_index_refuses_another_encoder(tmp_path: Path, qe_settings: Settings) -> None:
    """A live node: an index created by the fp32 encoder refuses an int8 run and search."""
    from genai_ingest.run.runtime import Runtime
    from genai_ingest.search.query import search_many
    from tests.es_live import drop_alias, es_settings, require_es, unique_alias

    url, alias = require_es(), unique_alias("gi-encoder")
    cache = {"query_encoder": qe_settings.query_encoder}
    int8 = es_settings(url, alias, tmp_path / "state").model_copy(update=cache)
    fp32 = int8.model_copy(
        update={"embed": EmbedSettings(precision="fp32", window_pooling="separate")}
    )
    try:
        Runtime(fp32).open()
        assert Runtime(fp32).store.index_identity() == ("all-MiniLM-L6-v2", 384)
        with pytest.raises(ModelMismatch, match=r"all-MiniLM-L6-v2\+int8") as refused:
            Runtime(int8).open()
        assert "embed.precision=fp32" in refused.value.reason
        with pytest.raises(ModelMismatch):
            search_many(int8, ["notice period"])
    finally:
        drop_alias(url, alias)
