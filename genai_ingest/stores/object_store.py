"""Object stores: the small key-to-bytes interface that the folder-layout DLQ and the GPU
embed deployment's batch payloads are written to, on S3 (through prefect-aws) or on disk."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from botocore.exceptions import ClientError

from genai_ingest.sources.s3 import (
    MISSING_CODES,
    PAGE_SIZE,
    error_code,
    list_objects,
    s3_client,
    split_s3_uri,
)


class ObjectStore(Protocol):
    """Keys (``/``-separated) to bytes."""

    def read(self, key: str) -> bytes | None:
        """The object's bytes; None when there is none."""

    def write(self, key: str, data: bytes) -> None:
        """Create or replace, atomically."""

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``."""

    def uri(self, key: str) -> str:
        """The URI of ``key`` (what ``open_object`` takes back)."""


class S3ObjectStore:
    """An ``ObjectStore`` on a bucket, under an optional folder."""

    def __init__(self, bucket: str, folder: str = "", page_size: int = PAGE_SIZE) -> None:
        self.bucket = bucket
        self.folder = folder.strip("/")
        self.page_size = page_size
        self.client = s3_client(bucket)

    def _key(self, key: str) -> str:
        return f"{self.folder}/{key}" if self.folder else key

    def read(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                return None
            raise

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def keys(self, prefix: str) -> Iterator[str]:
        start = len(self._key(""))
        for item in list_objects(self.client, self.bucket, self._key(prefix), self.page_size):
            yield item["Key"][start:]

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


class LocalObjectStore:
    """An ``ObjectStore`` in a folder; writes go through a temporary file and a rename."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def write(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)

    def keys(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    yield path.relative_to(self.root).as_posix()

    def uri(self, key: str) -> str:
        return (self.root / key).resolve().as_uri()


def open_store_url(url: str) -> ObjectStore:
    """``s3://bucket/folder``, ``file:///folder`` or a folder path."""
    if url.startswith("s3://"):
        return S3ObjectStore(*split_s3_uri(url))
    return LocalObjectStore(local_path(url))


def open_object(uri: str) -> tuple[ObjectStore, str]:
    """The store holding the object at ``uri`` and its key there."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        return S3ObjectStore(bucket), key
    path = local_path(uri)
    return LocalObjectStore(path.parent), path.name


def local_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path)) if url.startswith("file://") else Path(url)
