"""Prefect Block types: registration, secrets, save/load through a real Prefect server, the
conversion to ``Settings``, and the CLI's ``--settings-block``."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prefect_aws import AwsCredentials, S3Bucket
from pydantic import SecretStr

import blocks
from blocks import (
    DeadLetterBlock,
    EmbedderBlock,
    IngestSettingsBlock,
    VectorStoreBlock,
    load_settings,
)
from genai_ingest.config import RemoteEmbedSettings, RemoteEndpoint, ValidationSettings
from genai_ingest.sources import s3

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bucket_blocks(prefect_server: str) -> dict[str, str]:
    """Two saved S3 Bucket blocks: the DLQ's and the batch store's."""
    credentials = AwsCredentials(aws_access_key_id="AKIA", aws_secret_access_key="s3cr3t")
    names = {"dlq": f"dlq-{uuid.uuid4().hex[:8]}", "batches": f"batches-{uuid.uuid4().hex[:8]}"}
    S3Bucket(bucket_name="dlq-bucket", bucket_folder="prod", credentials=credentials).save(
        names["dlq"]
    )
    S3Bucket(bucket_name="batches", credentials=credentials).save(names["batches"])
    return names


def _full_block(data_dir: Path, buckets: dict[str, str]) -> IngestSettingsBlock:
    endpoint = RemoteEndpoint(url="http://tei:8080/v1", model="m", api_key=SecretStr("k3y"))
    return IngestSettingsBlock(
        data_dir=str(data_dir),
        documents_per_batch=16,
        validation=ValidationSettings(min_words=5, allowed_languages=["en", "de"]),
        vector_store=VectorStoreBlock(
            url="https://es.example:9200",
            elasticsearch={"api_key": "es-k3y", "index": "docs"},
        ),
        dead_letter=DeadLetterBlock(kind="s3", s3_bucket_block=buckets["dlq"]),
        embedder=EmbedderBlock(
            local={"device": "cuda", "batch_size": 128},
            remote=RemoteEmbedSettings(fallbacks=[endpoint]),
            gpu_deployment="embed/embed-gpu",
            parallelism=8,
            batch_bucket_block=buckets["batches"],
        ),
    )


def test_to_settings_maps_every_block(tmp_path: Path, bucket_blocks: dict[str, str]) -> None:
    settings = _full_block(tmp_path, bucket_blocks).to_settings()
    assert settings.data_dir == tmp_path and settings.documents_per_batch == 16
    assert settings.validation.allowed_languages == ["en", "de"]
    assert settings.store_url == "https://es.example:9200"
    assert settings.elasticsearch.index == "docs"
    assert settings.elasticsearch.api_key is not None
    assert settings.elasticsearch.api_key.get_secret_value() == "es-k3y"
    assert settings.dlq_url == "s3://dlq-bucket/prod"
    assert settings.embed.device == "cuda" and settings.embed.batch_size == 128
    assert settings.remote_embed.fallbacks[0].api_key == SecretStr("k3y")
    assert settings.embed_deployment == "embed/embed-gpu" and settings.embed_parallelism == 8
    assert settings.batch_store_url == "s3://batches"


def test_dead_letter_kinds() -> None:
    assert DeadLetterBlock(kind="local", folder="/dlq").settings_values() == {"dlq_url": "/dlq"}
    es = DeadLetterBlock(kind="elasticsearch").settings_values()
    assert es == {"elasticsearch": {"dlq_in_elasticsearch": True}}
    with pytest.raises(ValueError, match="needs s3_bucket_block"):
        DeadLetterBlock(kind="s3")
    with pytest.raises(ValueError, match="needs batch_bucket_block"):
        EmbedderBlock(gpu_deployment="embed/embed-gpu")


def test_secrets_are_declared_and_hidden() -> None:
    schema = IngestSettingsBlock._to_block_schema(block_type_id=uuid.uuid4())
    secrets = set(schema.fields["secret_fields"])
    assert {
        "vector_store.elasticsearch.api_key",
        "vector_store.elasticsearch.password",
        "embedder.remote.primary.api_key",
        "parse.passwords",
    } <= secrets
    block = VectorStoreBlock(url="https://es:9200", elasticsearch={"password": "pa55"})
    assert "pa55" not in repr(block) and "pa55" not in str(block.model_dump())


def test_register_save_load_and_cli(
    cli_env: dict[str, str], tmp_path: Path, bucket_blocks: dict[str, str]
) -> None:
    register = subprocess.run(
        [str(BIN / "prefect"), "block", "register", "-m", "blocks"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert register.returncode == 0, register.stderr
    for block_type in ("Settings", "Embedder", "Vector Store", "Dead Letter Queue"):
        assert f"genai-ingest {block_type}" in register.stdout

    name = f"test-{uuid.uuid4().hex[:8]}"
    block = _full_block(tmp_path / "from-block", bucket_blocks)
    block.vector_store = None  # the CLI check below opens the store
    block.save(name)
    loaded = IngestSettingsBlock.load(name)
    assert loaded.to_settings() == block.to_settings()
    assert load_settings(name).dlq_url == "s3://dlq-bucket/prod"
    assert s3.bucket_block("dlq-bucket").credentials.aws_secret_access_key == SecretStr("s3cr3t")

    local = IngestSettingsBlock(data_dir=str(tmp_path / "cli-state"))
    local.save(f"{name}-local")
    stats = subprocess.run(
        [str(BIN / "genai-ingest"), "stats", "--json", "--settings-block", f"{name}-local"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["documents"] == 0
    assert (tmp_path / "cli-state" / "genai-ingest.db").exists()


def test_module_exports_every_block_type() -> None:
    exported = {getattr(blocks, name) for name in blocks.__all__}
    assert {VectorStoreBlock, DeadLetterBlock, EmbedderBlock, IngestSettingsBlock} <= exported
