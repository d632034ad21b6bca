"""Sources: folder discovery, stable ids, and HTTP downloads against a real local server."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from genai_ingest.config import SourceSettings
from genai_ingest.failures.errors import (
    ChecksumMismatch,
    DocumentTooLarge,
    FetchFailed,
    SourceNotFound,
)
from genai_ingest.failures.policies import RetryPolicy
from genai_ingest.models import document_id
from genai_ingest.sources.discovery import discover, fetch, source_roots

FAST = RetryPolicy(attempts=4, initial_s=0.01, max_s=0.05, jitter_s=0.01, budget_s=5)
BODY = b"%PDF-1.4 pretend body " * 50
LOCAL = SourceSettings(allow_private_networks=True)  # the test server is on 127.0.0.1


class Routes(BaseHTTPRequestHandler):
    """/ok, /flaky (503 twice, then 200), /down (always 503), /missing (404), /big."""

    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        hits = Routes.hits[self.path] = Routes.hits.get(self.path, 0) + 1
        if self.path == "/ok" or (self.path == "/flaky" and hits > 2):
            self._send(200, BODY)
        elif self.path == "/big":
            self._send(200, b"x" * 5000)
        elif self.path == "/missing":
            self._send(404, b"not here")
        else:
            self._send(503, b"try later")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Routes.hits = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Routes)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_folder_discovery_is_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ("b.md", "a.txt", "sub/c.pdf", "sub/deep/d.docx", ".hidden/e.txt", "skip.tmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    settings = SourceSettings(exclude=["**/.*", "**/.*/**", "*.tmp"])
    refs = discover([str(tmp_path)], settings)
    names = [r.name for r in refs]
    assert names == ["a.txt", "b.md", "c.pdf", "d.docx"]
    only_pdf = discover([str(tmp_path)], SourceSettings(include=["**/*.pdf"]))
    assert [r.name for r in only_pdf] == ["c.pdf"]


def test_document_id_is_stable_and_derived_from_the_uri(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one")
    first = discover([str(tmp_path)], SourceSettings())[0]
    (tmp_path / "a.txt").write_text("changed content")
    second = discover([str(tmp_path / "a.txt")], SourceSettings())[0]
    assert first.doc_id == second.doc_id == document_id((tmp_path / "a.txt").resolve().as_uri())
    assert source_roots([str(tmp_path)]) == [tmp_path.resolve().as_uri() + "/"]


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="no such file or folder"):
        discover([str(tmp_path / "nope")], SourceSettings())


def test_local_file_over_the_size_limit_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_bytes(b"x" * 100)
    ref = discover([str(tmp_path)], SourceSettings())[0]
    with pytest.raises(DocumentTooLarge, match="exceeds the 10-byte limit"):
        fetch(ref, SourceSettings(max_file_bytes=10), FAST)


def test_download_retries_transient_errors(server: str) -> None:
    ref = discover([f"{server}/flaky"], SourceSettings())[0]
    raw = fetch(ref, LOCAL, FAST)
    assert raw.data == BODY
    assert Routes.hits["/flaky"] == 3
    assert raw.version == hashlib.sha256(BODY).hexdigest()


def test_download_gives_up_after_the_budget_as_transient(server: str) -> None:
    ref = discover([f"{server}/down"], SourceSettings())[0]
    with pytest.raises(FetchFailed, match="HTTP 503"):
        fetch(ref, LOCAL, FAST)
    assert Routes.hits["/down"] == FAST.attempts


def test_checksum_mismatch_falls_back_to_a_mirror(server: str) -> None:
    good = hashlib.sha256(BODY).hexdigest()
    spec = f"{server}/big#sha256={good}&mirror={server}/missing&mirror={server}/ok"
    raw = fetch(discover([spec], SourceSettings())[0], LOCAL, FAST)
    assert raw.data == BODY
    assert Routes.hits == {"/big": 1, "/missing": 1, "/ok": 1}


def test_checksum_mismatch_without_mirror_is_permanent(server: str) -> None:
    spec = f"{server}/ok#sha256={'0' * 64}"
    with pytest.raises(ChecksumMismatch, match="expected 0000"):
        fetch(discover([spec], SourceSettings())[0], LOCAL, FAST)


def test_download_size_limit_and_not_found(server: str) -> None:
    with pytest.raises(DocumentTooLarge):
        fetch(
            discover([f"{server}/big"], SourceSettings())[0],
            SourceSettings(max_file_bytes=100, allow_private_networks=True),
            FAST,
        )
    with pytest.raises(SourceNotFound, match="HTTP 404"):
        fetch(discover([f"{server}/missing"], SourceSettings())[0], LOCAL, FAST)
    assert Routes.hits["/missing"] == 1  # a 404 is not retried
