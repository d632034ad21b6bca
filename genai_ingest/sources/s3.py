"""Object storage through prefect-aws: ``s3://bucket/prefix`` sources, batch payloads for the
GPU embed deployment, and the folder-layout dead-letter queue on S3 or on local disk.

Credentials and endpoint come from a registered prefect-aws ``S3Bucket`` block for the bucket
(``register_bucket``), else from the default AWS chain (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL`` for MinIO/moto, the pod's IAM role).

DLQ layout (same on S3 and on disk)::

    dlq/ingestion/<first failure, UTC>/<doc_id>.json   the entry (history, traceback, status)
    dlq/ingestion/<first failure, UTC>/<doc_id>.raw    the raw bytes, when there are any
    dlq/ingestion/index/<doc_id>.json                   pointer: entry key, status, stage, class

``get`` reads the pointer then the entry; ``entries`` lists only ``index/`` and reads the
entries whose pointer matches the filter. The pointer is written last (the commit point).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

from botocore.exceptions import BotoCoreError, ClientError

from genai_ingest.config import SourceSettings
from genai_ingest.failures.dlq import DeadLetter, EntryStatus, Failure, close_entry, merge_failure
from genai_ingest.failures.errors import DocumentTooLarge, FetchFailed, SourceNotFound, Stage
from genai_ingest.models import SourceRef
from genai_ingest.sources.discovery import EXTRA_FETCHERS, EXTRA_LISTERS, _matches

if TYPE_CHECKING:
    from prefect_aws import S3Bucket

DLQ_ROOT = "dlq/ingestion"
#: Keys per ListObjects page (S3's maximum).
PAGE_SIZE = 1000
_READ_THREADS = 16
_MISSING = ("NoSuchKey", "404", "NotFound", "NoSuchBucket")

# --- clients -------------------------------------------------------------------------------

_buckets: dict[str, S3Bucket] = {}


def register_bucket(bucket: S3Bucket) -> None:
    """Use this block's credentials and endpoint for ``s3://<bucket_name>/…`` in this process."""
    _buckets[bucket.bucket_name] = bucket


def bucket_block(name: str) -> S3Bucket:
    """The registered block for bucket ``name``, else one on the default AWS chain."""
    from prefect_aws import S3Bucket

    return _buckets.get(name) or S3Bucket(bucket_name=name)


def s3_client(bucket: str) -> Any:
    """A boto3 S3 client for ``bucket`` (prefect-aws caches clients per credentials)."""
    return bucket_block(bucket).credentials.get_s3_client()


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` → (bucket, key/prefix)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise SourceNotFound(f"no bucket in {uri}", stage=Stage.FETCH)
    return bucket, key


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# --- object stores: the small interface the DLQ and the batch payloads are written to ------


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
            if _error_code(exc) in _MISSING:
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
    return LocalObjectStore(_local_path(url))


def open_object(uri: str) -> tuple[ObjectStore, str]:
    """The store holding the object at ``uri`` and its key there."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        return S3ObjectStore(bucket), key
    path = _local_path(uri)
    return LocalObjectStore(path.parent), path.name


def _local_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path)) if url.startswith("file://") else Path(url)


# --- sources ---------------------------------------------------------------------------------


def list_objects(client: Any, bucket: str, prefix: str, page_size: int) -> Iterator[dict]:
    """Every object under ``prefix``, one ``ListObjectsV2`` page at a time."""
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        yield from page.get("Contents", [])


def _latest_versions(client: Any, bucket: str, prefix: str, page_size: int) -> Iterator[dict]:
    """The current version of every object under ``prefix`` (versioned buckets)."""
    pages = client.get_paginator("list_object_versions").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        yield from (v for v in page.get("Versions", []) if v.get("IsLatest"))


def _is_versioned(client: Any, bucket: str) -> bool:
    return client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"


def object_tag(etag: str, version_id: str | None) -> str:
    """What ``SourceRef.etag`` records: the ETag, plus ``?versionId=`` on versioned buckets."""
    etag = etag.strip('"')
    return f"{etag}?versionId={version_id}" if version_id and version_id != "null" else etag


def parse_object_tag(tag: str | None) -> tuple[str | None, str | None]:
    """(ETag, VersionId) from ``SourceRef.etag``."""
    if not tag:
        return None, None
    etag, _, version = tag.partition("?versionId=")
    return etag, version or None


def list_s3(spec: str, settings: SourceSettings, page_size: int = PAGE_SIZE) -> Iterator[SourceRef]:
    """Objects under ``s3://bucket/prefix`` (a folder, or one key) matching the globs."""
    bucket, prefix = split_s3_uri(spec)
    client = s3_client(bucket)
    try:
        versioned = _is_versioned(client, bucket)
        lister = _latest_versions if versioned else list_objects
        for item in lister(client, bucket, prefix, page_size):
            ref = _object_ref(bucket, prefix, item, settings)
            if ref is not None:
                yield ref
    except ClientError as exc:
        if _error_code(exc) in _MISSING:
            raise SourceNotFound(f"no such bucket: {bucket}", stage=Stage.FETCH) from exc
        raise FetchFailed(f"listing {spec}: {_error_code(exc)}", stage=Stage.FETCH) from exc
    except BotoCoreError as exc:
        raise FetchFailed(f"listing {spec}: {type(exc).__name__}", stage=Stage.FETCH) from exc


def _object_ref(bucket: str, prefix: str, item: dict, settings: SourceSettings) -> SourceRef | None:
    key: str = item["Key"]
    relative = key[len(prefix) :].lstrip("/") if key != prefix else key.rsplit("/", 1)[-1]
    in_folder = key == prefix or not prefix or prefix.endswith("/") or key[len(prefix)] == "/"
    if key.endswith("/") or not in_folder:
        return None
    if not _matches(relative, settings.include) or _matches(relative, settings.exclude):
        return None
    return SourceRef(
        uri=f"s3://{bucket}/{key}",
        name=key.rsplit("/", 1)[-1],
        size=item.get("Size"),
        etag=object_tag(item.get("ETag", ""), item.get("VersionId")),
    )


def fetch_s3(ref: SourceRef, settings: SourceSettings) -> bytes:
    """The object's bytes (the listed version, on versioned buckets); size limit enforced."""
    bucket, key = split_s3_uri(ref.uri)
    _, version_id = parse_object_tag(ref.etag)
    extra = {"VersionId": version_id} if version_id else {}
    try:
        response = s3_client(bucket).get_object(Bucket=bucket, Key=key, **extra)
        size = int(response.get("ContentLength") or 0)
        if size > settings.max_file_bytes:
            response["Body"].close()
            raise DocumentTooLarge(
                f"{size} bytes exceeds the {settings.max_file_bytes}-byte limit"
                " (sources.max_file_bytes)",
                stage=Stage.FETCH,
            )
        return response["Body"].read()
    except ClientError as exc:
        code = _error_code(exc)
        if code in (*_MISSING, "NoSuchVersion", "AccessDenied", "403"):
            raise SourceNotFound(f"{code} for {ref.uri}", stage=Stage.FETCH) from exc
        raise FetchFailed(f"{code} fetching {ref.uri}", stage=Stage.FETCH) from exc
    except BotoCoreError as exc:
        raise FetchFailed(f"{type(exc).__name__} fetching {ref.uri}", stage=Stage.FETCH) from exc


EXTRA_LISTERS["s3"] = list_s3
EXTRA_FETCHERS["s3"] = fetch_s3


# --- the dead-letter queue on an object store -------------------------------------------------


def _timestamp(entry: DeadLetter) -> str:
    return entry.first_failed_at.strftime("%Y%m%dT%H%M%SZ")


class ObjectStoreDeadLetterQueue:
    """``DeadLetterQueue`` over an ``ObjectStore`` (layout in the module docstring).

    Writers in one process are serialised; two processes writing the same entry at once
    keep the last write (the pipeline dead-letters from the flow process only)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._lock = threading.Lock()

    # keys
    @staticmethod
    def _index_key(entry_id: str) -> str:
        return f"{DLQ_ROOT}/index/{entry_id}.json"

    @staticmethod
    def _entry_key(entry: DeadLetter) -> str:
        return f"{DLQ_ROOT}/{_timestamp(entry)}/{entry.doc_id}.json"

    def _pointer(self, entry_id: str) -> dict[str, Any] | None:
        data = self.store.read(self._index_key(entry_id))
        return json.loads(data) if data is not None else None

    def _load(self, pointer: dict[str, Any]) -> DeadLetter | None:
        data = self.store.read(pointer["key"])
        return DeadLetter.from_json(json.loads(data)) if data is not None else None

    def _save(self, entry: DeadLetter) -> None:
        key = self._entry_key(entry)
        self.store.write(key, json.dumps(entry.to_json()).encode())
        pointer = {
            "key": key,
            "raw_key": key.removesuffix(".json") + ".raw",
            "status": entry.status.value,
            "stage": entry.stage,
            "error_class": entry.error_class,
        }
        self.store.write(self._index_key(entry.entry_id), json.dumps(pointer).encode())

    # protocol
    def put(self, failure: Failure, raw: bytes | None) -> DeadLetter:
        with self._lock:
            entry = merge_failure(self.get(failure.doc_id), failure, raw)
            if raw is not None:
                self.store.write(self._entry_key(entry).removesuffix(".json") + ".raw", raw)
            self._save(entry)
        return entry

    def get(self, entry_id: str) -> DeadLetter | None:
        pointer = self._pointer(entry_id)
        return self._load(pointer) if pointer else None

    def entries(
        self,
        *,
        status: EntryStatus | None = EntryStatus.OPEN,
        stage: str | None = None,
        error_class: str | None = None,
    ) -> list[DeadLetter]:
        wanted = {"status": status and status.value, "stage": stage, "error_class": error_class}
        index_keys = list(self.store.keys(f"{DLQ_ROOT}/index/"))
        with ThreadPoolExecutor(_READ_THREADS) as pool:
            pointers = [p for p in pool.map(self._read_json, index_keys) if p is not None]
            matching = [
                p for p in pointers if all(v is None or p[k] == v for k, v in wanted.items())
            ]
            found = [e for e in pool.map(self._load, matching) if e is not None]
        return sorted(found, key=lambda e: (e.first_failed_at, e.entry_id))

    def _read_json(self, key: str) -> dict[str, Any] | None:
        data = self.store.read(key)
        return json.loads(data) if data is not None else None

    def raw(self, entry_id: str) -> bytes | None:
        pointer = self._pointer(entry_id)
        return self.store.read(pointer["raw_key"]) if pointer else None

    def _update(self, entry_id: str, change: Any) -> None:
        with self._lock:
            entry = self.get(entry_id)
            if entry is None:
                raise KeyError(entry_id)
            self._save(change(entry))

    def resolve(self, entry_id: str, note: str) -> None:
        self._update(entry_id, lambda e: close_entry(e, EntryStatus.RESOLVED, note))

    def discard(self, entry_id: str, reason: str) -> None:
        self._update(entry_id, lambda e: close_entry(e, EntryStatus.DISCARDED, reason))

    def set_overrides(self, entry_id: str, overrides: dict[str, Any]) -> None:
        def apply(entry: DeadLetter) -> DeadLetter:
            entry.overrides = {**entry.overrides, **overrides}
            return entry

        self._update(entry_id, apply)

    def close(self) -> None:
        """Nothing to release: every call is one request."""


class S3DeadLetterQueue(ObjectStoreDeadLetterQueue):
    """The DLQ in a bucket (under ``folder``), through prefect-aws."""

    def __init__(self, bucket: str, folder: str = "", page_size: int = PAGE_SIZE) -> None:
        super().__init__(S3ObjectStore(bucket, folder, page_size))


class LocalFolderDeadLetterQueue(ObjectStoreDeadLetterQueue):
    """The DLQ in a local (or mounted) folder, same layout as on S3."""

    def __init__(self, root: Path) -> None:
        super().__init__(LocalObjectStore(root))


def open_dlq_url(url: str) -> ObjectStoreDeadLetterQueue:
    """``s3://bucket/folder`` → S3; ``file:///folder`` or a path → local folder."""
    if url.startswith("s3://"):
        return S3DeadLetterQueue(*split_s3_uri(url))
    return LocalFolderDeadLetterQueue(_local_path(url))
