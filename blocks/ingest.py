"""Prefect Block types configuring genai-ingest from the Prefect UI or API.

S3 buckets are referenced by the name of their prefect-aws ``S3Bucket`` block (nesting that
block, whose credentials field is a union of block types, breaks Prefect 3.9's server-side
schema lookup for blocks nested two deep).

``IngestSettingsBlock`` holds the pipeline settings and references the other blocks; flows and
the CLI take its name (``settings_block``) and turn it into ``Settings`` with ``load_settings``.
Secrets are ``SecretStr`` (hidden in the UI, never logged)."""

from typing import Any, Literal

from prefect.blocks.core import Block
from prefect_aws import S3Bucket
from pydantic import Field, model_validator

from genai_ingest.config import (
    ChunkSettings,
    CleanSettings,
    DedupSettings,
    ElasticsearchSettings,
    EmbedSettings,
    ParseSettings,
    RemoteEmbedSettings,
    Settings,
    SourceSettings,
    ValidationSettings,
)


def bucket_url(block_name: str) -> str:
    """``s3://bucket/folder`` of the prefect-aws ``S3Bucket`` block called ``block_name``."""
    bucket = S3Bucket.load(block_name)
    return f"s3://{bucket.bucket_name}/{bucket.bucket_folder.strip('/')}".rstrip("/")


class VectorStoreBlock(Block):
    """Where chunks and vectors go: the embedded SQLite store, or an Elasticsearch cluster."""

    _block_type_name = "genai-ingest Vector Store"
    _block_type_slug = "genai-ingest-vector-store"

    url: str | None = Field(
        None, description="Elasticsearch URL (https://…); empty: the embedded store in data_dir"
    )
    elasticsearch: ElasticsearchSettings = Field(
        default_factory=ElasticsearchSettings,
        description="connection (api_key, password are secrets), index alias and options",
    )

    def settings_values(self) -> dict[str, Any]:
        """The ``Settings`` fields this block sets."""
        return {"store_url": self.url, "elasticsearch": self.elasticsearch.model_dump()}


class DeadLetterBlock(Block):
    """Where failed documents wait: the store's own DLQ, a folder, an S3 bucket or an
    Elasticsearch index (beside an Elasticsearch vector store)."""

    _block_type_name = "genai-ingest Dead Letter Queue"
    _block_type_slug = "genai-ingest-dead-letter-queue"

    kind: Literal["embedded", "local", "s3", "elasticsearch"] = Field(
        "embedded", description="embedded: same SQLite file as the store"
    )
    folder: str | None = Field(None, description="kind=local: folder (or a mounted volume)")
    s3_bucket_block: str | None = Field(
        None, description="kind=s3: name of a prefect-aws S3 Bucket block (bucket, folder, creds)"
    )

    @model_validator(mode="after")
    def _check_kind(self) -> "DeadLetterBlock":
        if self.kind == "local" and not self.folder:
            raise ValueError("kind=local needs folder")
        if self.kind == "s3" and not self.s3_bucket_block:
            raise ValueError("kind=s3 needs s3_bucket_block")
        return self

    def settings_values(self) -> dict[str, Any]:
        if self.kind == "local":
            return {"dlq_url": self.folder}
        if self.kind == "s3" and self.s3_bucket_block:
            return {"dlq_url": bucket_url(self.s3_bucket_block)}
        if self.kind == "elasticsearch":
            return {"elasticsearch": {"dlq_in_elasticsearch": True}}
        return {}

    def bucket_blocks(self) -> list[str]:
        return [self.s3_bucket_block] if self.kind == "s3" and self.s3_bucket_block else []


class EmbedderBlock(Block):
    """How chunks are embedded: a local sentence-transformers model (optionally fanned out to
    a GPU deployment) or an OpenAI-compatible endpoint with fallbacks."""

    _block_type_name = "genai-ingest Embedder"
    _block_type_slug = "genai-ingest-embedder"

    local: EmbedSettings = Field(
        default_factory=EmbedSettings, description="model, device and batch size"
    )
    remote: RemoteEmbedSettings = Field(
        default_factory=RemoteEmbedSettings,
        description="primary endpoint and fallbacks (API keys are secrets); empty: local",
    )
    gpu_deployment: str | None = Field(
        None, description="'embed/embed-gpu': embed batches on the Kubernetes GPU pool"
    )
    parallelism: int = Field(4, ge=1, description="GPU embed runs at once")
    timeout_s: float = Field(900, gt=0, description="per GPU embed run, Pending included")
    batch_bucket_block: str | None = Field(
        None,
        description="S3 Bucket block where batch payloads and vectors go (with gpu_deployment)",
    )

    @model_validator(mode="after")
    def _check_fanout(self) -> "EmbedderBlock":
        if self.gpu_deployment and not self.batch_bucket_block:
            raise ValueError("gpu_deployment needs batch_bucket_block (pods see no local disk)")
        return self

    def settings_values(self) -> dict[str, Any]:
        return {
            "embed": self.local.model_dump(),
            "remote_embed": self.remote.model_dump(),
            "embed_deployment": self.gpu_deployment,
            "embed_parallelism": self.parallelism,
            "embed_timeout_s": self.timeout_s,
            "batch_store_url": (
                bucket_url(self.batch_bucket_block) if self.batch_bucket_block else None
            ),
        }

    def bucket_blocks(self) -> list[str]:
        return [self.batch_bucket_block] if self.batch_bucket_block else []


class IngestSettingsBlock(Block):
    """Everything an ingest run needs: limits, parsing, validation rules, chunking, dedup, and
    references to the vector store, DLQ and embedder blocks."""

    _block_type_name = "genai-ingest Settings"
    _block_type_slug = "genai-ingest-settings"

    data_dir: str = Field(".genai-ingest", description="state folder (embedded store, cache)")
    documents_per_batch: int = Field(8, ge=1, description="documents per prepare/embed batch")
    sources: SourceSettings = Field(
        default_factory=SourceSettings, description="globs, size limit, download timeout"
    )
    parse: ParseSettings = Field(default_factory=ParseSettings)
    clean: CleanSettings = Field(default_factory=CleanSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    chunk: ChunkSettings = Field(default_factory=ChunkSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    vector_store: VectorStoreBlock | None = None
    dead_letter: DeadLetterBlock | None = None
    embedder: EmbedderBlock | None = None
    source_bucket_blocks: list[str] = Field(
        default_factory=list, description="S3 Bucket blocks with the credentials of s3:// sources"
    )

    def to_settings(self) -> Settings:
        """The ``Settings`` this block describes (environment variables fill the rest)."""
        values: dict[str, Any] = self.model_dump(
            include={
                "data_dir",
                "documents_per_batch",
                "sources",
                "parse",
                "clean",
                "validation",
                "chunk",
                "dedup",
            }
        )
        for block in (self.vector_store, self.embedder, self.dead_letter):
            if block is not None:
                values = _merge(values, block.settings_values())
        return Settings(**values)

    def bucket_blocks(self) -> list[str]:
        """Names of the S3 Bucket blocks of every bucket this configuration reads or writes."""
        found = list(self.source_bucket_blocks)
        for block in (self.dead_letter, self.embedder):
            if block is not None:
                found += block.bucket_blocks()
        return found


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, nested dictionaries merged."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
