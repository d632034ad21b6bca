"""S3 sources, the S3 and local-folder DLQs, and the embed flow's payload round trip, against a
real S3-protocol server (moto in server mode on loopback) through prefect-aws."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters

from genai_ingest.config import Settings, SourceSettings
from genai_ingest.failures.dlq import EntryStatus, Failure
from genai_ingest.failures.errors import DocumentTooLarge, SourceNotFound
from genai_ingest.models import SourceRef, utcnow
from genai_ingest.sources import s3
from genai_ingest.stores import folder_dlq, object_store, open_dlq
from tests.conftest import SAMPLES

MOTO = Path(sys.executable).with_name("moto_server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto S3 server on a free loopback port, for this module."""
    port = _free_port()
    proc = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def bucket(moto_url: str, request: pytest.FixtureRequest) -> S3Bucket:
    """A fresh bucket (named after the test), registered for s3:// URIs in this process."""
    name = request.node.name.lower().replace("_", "-").replace("[", "-").strip("]-")[:50]
    credentials = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=moto_url),
    )
    block = S3Bucket(bucket_name=name, credentials=credentials)
    block.credentials.get_s3_client().create_bucket(Bucket=name)
    s3.register_bucket(block)
    return block


def _put(bucket: S3Bucket, key: str, body: bytes) -> dict[str, Any]:
    return bucket.credentials.get_s3_client().put_object(
        Bucket=bucket.bucket_name, Key=key, Body=body
    )


# --- sources -------------------------------------------------------------------------------


def test_listing_pages_through_every_object(bucket: S3Bucket) -> None:
    etags = {
        f"docs/{i:02}.txt": _put(bucket, f"docs/{i:02}.txt", b"x%d" % i)["ETag"] for i in range(7)
    }
    _put(bucket, "docs/sub/skip.tmp", b"tmp")
    _put(bucket, "docs/.hidden", b"hidden")
    _put(bucket, "docsother/a.txt", b"not under docs/")
    settings = SourceSettings(exclude=["**/*.tmp", "**/.*"])
    refs = list(s3.list_s3(f"s3://{bucket.bucket_name}/docs", settings, page_size=2))
    assert [r.name for r in refs] == [f"{i:02}.txt" for i in range(7)]
    assert all(r.etag == etags[r.uri.split("/", 3)[3]].strip('"') for r in refs)
    assert refs[0].size == 2


def test_versioned_bucket_records_and_fetches_the_listed_version(bucket: S3Bucket) -> None:
    client = bucket.credentials.get_s3_client()
    client.put_bucket_versioning(
        Bucket=bucket.bucket_name, VersioningConfiguration={"Status": "Enabled"}
    )
    for i in range(5):
        _put(bucket, f"v/{i}.md", b"old")
    new = _put(bucket, "v/0.md", b"new")
    refs = list(s3.list_s3(f"s3://{bucket.bucket_name}/v/", SourceSettings(), page_size=2))
    assert len(refs) == 5
    etag, version = s3.parse_object_tag(refs[0].etag)
    assert (etag, version) == (new["ETag"].strip('"'), new["VersionId"])
    _put(bucket, "v/0.md", b"newer, written after the listing")
    assert s3.fetch_s3(refs[0], SourceSettings()) == b"new"


def test_fetch_enforces_limits_and_reports_missing_objects(bucket: S3Bucket) -> None:
    _put(bucket, "big.bin", b"x" * 100)
    ref = SourceRef(uri=f"s3://{bucket.bucket_name}/big.bin", name="big.bin")
    assert s3.fetch_s3(ref, SourceSettings()) == b"x" * 100
    with pytest.raises(DocumentTooLarge):
        s3.fetch_s3(ref, SourceSettings(max_file_bytes=10))
    with pytest.raises(SourceNotFound):
        s3.fetch_s3(SourceRef(uri=f"s3://{bucket.bucket_name}/gone", name="gone"), SourceSettings())
    s3.register_bucket(bucket.model_copy(update={"bucket_name": "no-such-bucket"}))
    with pytest.raises(SourceNotFound):
        list(s3.list_s3("s3://no-such-bucket/x", SourceSettings()))


# --- DLQ -------------------------------------------------------------------------------------


def _failure(doc_id: str, stage: str = "parse", error_class: str = "corrupt") -> Failure:
    return Failure(
        doc_id=doc_id,
        source=f"s3://b/{doc_id}.pdf",
        stage=stage,
        error_class=error_class,
        error_kind="permanent",
        reason="broken",
        traceback="Traceback: …",
        version="v1",
    )


@pytest.fixture(params=["s3", "local"])
def dlq_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "dlq")
    bucket = request.getfixturevalue("bucket")
    return f"s3://{bucket.bucket_name}/state"


def test_dlq_round_trip_with_layout(dlq_url: str) -> None:
    dlq = open_dlq(Settings(dlq_url=dlq_url))
    assert isinstance(dlq, folder_dlq.ObjectStoreDeadLetterQueue)
    entry = dlq.put(_failure("doc-a"), b"%PDF raw bytes")
    dlq.put(_failure("doc-b", stage="embed", error_class="endpoint_unavailable"), None)
    day = utcnow().strftime("%Y%m%d")
    keys = set(dlq.store.keys("dlq/ingestion/"))
    entry_key = next(k for k in keys if k.endswith("/doc-a.json") and "/index/" not in k)
    assert entry_key.startswith(f"dlq/ingestion/{day}T") and entry_key.count("/") == 3
    assert entry_key.removesuffix(".json") + ".raw" in keys
    assert {"dlq/ingestion/index/doc-a.json", "dlq/ingestion/index/doc-b.json"} <= keys

    assert dlq.get("doc-a") == entry
    assert dlq.raw("doc-a") == b"%PDF raw bytes"
    assert dlq.raw("doc-b") is None
    assert [e.doc_id for e in dlq.entries()] == ["doc-a", "doc-b"]
    assert [e.doc_id for e in dlq.entries(stage="embed")] == ["doc-b"]

    again = dlq.put(_failure("doc-a"), b"%PDF raw bytes v2")
    assert again.attempts == 2 and len(again.history) == 2
    assert dlq.raw("doc-a") == b"%PDF raw bytes v2"
    dlq.set_overrides("doc-a", {"metadata": {"team": "x"}})
    dlq.resolve("doc-a", "indexed")
    assert [e.doc_id for e in dlq.entries()] == ["doc-b"]
    resolved = dlq.get("doc-a")
    assert resolved is not None and resolved.status is EntryStatus.RESOLVED
    assert resolved.overrides == {"metadata": {"team": "x"}}
    dlq.discard("doc-b", "not needed")
    assert dlq.entries() == []
    assert len(dlq.entries(status=None)) == 2
    with pytest.raises(KeyError):
        dlq.resolve("doc-z", "none")


# --- the embed flow's payloads (in-process run) ----------------------------------------------


def test_embed_flow_writes_vectors_once(prefect_server: str, bucket: S3Bucket) -> None:
    from flows.embed import decode_vectors, embed, encode_payload

    store = object_store.S3ObjectStore(bucket.bucket_name, "batches")
    texts = ["the first chunk", "a second, different chunk"]
    store.write("embed/k1/batch.json", encode_payload("all-MiniLM-L6-v2", 384, texts, ["h1", "h2"]))
    uri = embed(batch=store.uri("embed/k1/batch.json"), device="cpu")
    assert uri == f"s3://{bucket.bucket_name}/batches/embed/k1/vectors.npz"
    written = store.read("embed/k1/vectors.npz")
    assert written is not None
    vectors, hashes, model = decode_vectors(written)
    assert vectors.shape == (2, 384) and hashes == ["h1", "h2"] and model == "all-MiniLM-L6-v2"
    assert embed(batch=store.uri("embed/k1/batch.json")) == uri
    assert store.read("embed/k1/vectors.npz") == written


# --- end to end ------------------------------------------------------------------------------


def test_ingest_of_an_s3_prefix(prefect_server: str, bucket: S3Bucket, tmp_path: Path) -> None:
    from flows.ingest import ingest

    for name in ("docling_wiki.md", "docling_csv-comma.csv", "unstructured_password.pdf"):
        _put(bucket, f"incoming/{name}", (SAMPLES / name).read_bytes())
    dlq_url = f"s3://{bucket.bucket_name}/state"
    settings = Settings(data_dir=tmp_path / "state", dlq_url=dlq_url)
    report = ingest(sources=[f"s3://{bucket.bucket_name}/incoming/"], settings=settings)
    assert report["documents_seen"] == 3
    assert report["documents_indexed"] == 2
    assert report["documents_failed"] == 1
    [entry] = open_dlq(settings).entries()
    assert entry.source.endswith("/incoming/unstructured_password.pdf")
    assert entry.error_class == "password_required"
    raw = open_dlq(settings).raw(entry.entry_id)
    assert raw == (SAMPLES / "unstructured_password.pdf").read_bytes()

    again = ingest(sources=[f"s3://{bucket.bucket_name}/incoming/"], settings=settings)
    assert again["documents_unchanged"] == 3  # the permanent failure is not retried either


@pytest.fixture(autouse=True)
def _no_leftover_buckets() -> Iterator[None]:
    yield
    s3._buckets.clear()


def test_local_store_uri_round_trip(tmp_path: Path) -> None:
    store = object_store.open_store_url(tmp_path.as_uri())
    store.write("a/b.json", b"{}")
    opened, key = object_store.open_object(store.uri("a/b.json"))
    assert opened.read(key) == b"{}"
    shutil.rmtree(tmp_path / "a")
    assert opened.read(key) is None
