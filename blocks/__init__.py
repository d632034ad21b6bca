"""Prefect Block types for genai-ingest (``prefect block register -m blocks``)."""

from prefect_aws import AwsCredentials, S3Bucket

from blocks.ingest import DeadLetterBlock, EmbedderBlock, IngestSettingsBlock, VectorStoreBlock
from genai_ingest.config import Settings

__all__ = [
    "AwsCredentials",
    "DeadLetterBlock",
    "EmbedderBlock",
    "IngestSettingsBlock",
    "S3Bucket",
    "VectorStoreBlock",
    "load_settings",
]


def load_settings(name: str) -> Settings:
    """Load the ``IngestSettingsBlock`` called ``name``, make its S3 buckets' credentials
    available to this process, and return its ``Settings``."""
    from genai_ingest.sources.s3 import register_bucket

    block = IngestSettingsBlock.load(name)
    for bucket_block in block.bucket_blocks():
        register_bucket(S3Bucket.load(bucket_block))
    return block.to_settings()
