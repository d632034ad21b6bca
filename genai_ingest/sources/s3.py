"""``s3://bucket/prefix`` sources through prefect-aws: listing (the current version of each
object on versioned buckets) and fetching, registered with ``sources.discovery``.

Credentials and endpoint come from a registered prefect-aws ``S3Bucket`` block for the bucket
(``register_bucket``), else from the default AWS chain (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL`` for MinIO/moto, the pod's IAM role).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from genai_ingest.config import SourceSettings
from genai_ingest.failures.errors import DocumentTooLarge, FetchFailed, SourceNotFound, Stage
from genai_ingest.models import SourceRef
from genai_ingest.sources.discovery import EXTRA_FETCHERS, EXTRA_LISTERS, _matches

if TYPE_CHECKING:
    from prefect_aws import S3Bucket

#: Keys per ListObjects page (S3's maximum).
PAGE_SIZE = 1000
#: Error codes of a missing object, version or bucket.
MISSING_CODES = ("NoSuchKey", "404", "NotFound", "NoSuchBucket")

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


def error_code(exc: ClientError) -> str:
    """The S3 error code of a failed call (``NoSuchKey``, ``403`` ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


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
        if error_code(exc) in MISSING_CODES:
            raise SourceNotFound(f"no such bucket: {bucket}", stage=Stage.FETCH) from exc
        raise FetchFailed(f"listing {spec}: {error_code(exc)}", stage=Stage.FETCH) from exc
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
        code = error_code(exc)
        if code in (*MISSING_CODES, "NoSuchVersion", "AccessDenied", "403"):
            raise SourceNotFound(f"{code} for {ref.uri}", stage=Stage.FETCH) from exc
        raise FetchFailed(f"{code} fetching {ref.uri}", stage=Stage.FETCH) from exc
    except BotoCoreError as exc:
        raise FetchFailed(f"{type(exc).__name__} fetching {ref.uri}", stage=Stage.FETCH) from exc


EXTRA_LISTERS["s3"] = list_s3
EXTRA_FETCHERS["s3"] = fetch_s3
