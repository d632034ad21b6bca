"""Hostile input (issue 9), generated here, small and bounded: nothing leaks, nothing escapes
the source folder, nothing kills or stalls the run. Real parsers, real HTTP server, real run."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import ClassVar

import pytest

from genai_ingest.config import ParseSettings, Settings, SourceSettings, ValidationSettings
from genai_ingest.failures.errors import (
    DeadlineExceeded,
    DocumentTooLarge,
    ErrorKind,
    ResourceLimit,
    SkippedSource,
    SourceRefused,
    UnsafeContent,
)
from genai_ingest.failures.policies import RetryPolicy
from genai_ingest.failures.redact import keepable_bytes, normal_form, redact, redact_secrets
from genai_ingest.parse.deadline import parse_deadline_s
from genai_ingest.parse.document import parse_document
from genai_ingest.parse.isolation import ParserPool, parse_bounded
from genai_ingest.sources.discovery import discover, fetch, path_to_uri, uri_to_path
from genai_ingest.sources.download import check_url
from genai_ingest.text.validate import validate_text
from tests.conftest import fixture_file

FAST = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05, jitter_s=0.01, budget_s=5)
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GHP = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1eF3hJ5"
PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV"
CONSOLE_PASSWORD = "Tr0ub4dor&3horse"
SECRETS = (AWS_SECRET, GHP, PAT, CONSOLE_PASSWORD)
#: The credentials.csv the AWS console hands out: columns, no key=value labels.
CREDENTIALS_CSV = (
    "User name,Password,Access key ID,Secret access key,Console login link\n"
    f"deploy-bot,{CONSOLE_PASSWORD},{AWS_ID},{AWS_SECRET},https://1234.signin.aws.amazon.com/console\n"
)
SECRET_NOTES = (
    "# Deployment notes for the billing_service\n\n"
    f"The release job reads aws_secret_access_key = {AWS_SECRET} from the vault.\n\n"
    f"Our CI uses the token {GHP} and the fine-grained {PAT} for pushes.\n"
)


# --- secrets ---------------------------------------------------------------------------------


def _no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"secrets leaked: {leaked}"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("credentials.csv", CREDENTIALS_CSV.encode()),
        ("notes.md", SECRET_NOTES.encode()),
        ("notes.html", f"<html><body><pre>{SECRET_NOTES}</pre></body></html>".encode()),
        ("notes.txt", SECRET_NOTES.encode()),
    ],
)
def test_secrets_are_redacted_from_what_every_format_yields(name: str, data: bytes) -> None:
    parsed = parse_document(data, name, ParseSettings())
    text, kinds = redact_secrets(normal_form(parsed.text))
    _no_secret(text)
    assert "aws_secret_key" in kinds


def test_docling_escapes_do_not_hide_secrets() -> None:
    escaped = SECRET_NOTES.replace("_", "\\_")
    text, kinds = redact_secrets(normal_form(escaped))
    _no_secret(text)
    assert kinds == ["aws_secret_key", "github_token"]
    assert "billing_service" in text  # ordinary words keep their underscores


def test_key_pairs_are_found_by_shape_in_rows_without_labels() -> None:
    table = (
        "| who | id | key | note |\n|---|---|---|---|\n"
        f"| bot | {AWS_ID} | {AWS_SECRET} | rotated monthly |\n"
        f"{AWS_SECRET} {AWS_ID}\n"
        "| path | /usr/share/doc/packages/python3/README.rst |\n"
    )
    text, _ = redact_secrets(table)
    _no_secret(text)
    assert AWS_ID not in text
    assert "/usr/share/doc/packages/python3/README.rst" in text  # not key-like: kept


def test_dlq_reasons_and_traces_are_redacted() -> None:
    _no_secret(redact(f"ValueError: bad row {AWS_ID},{AWS_SECRET} near {GHP}"))


def test_the_dlq_keeps_no_bytes_whose_text_shows_a_secret() -> None:
    assert keepable_bytes(SECRET_NOTES.encode()) is None
    assert keepable_bytes(SECRET_NOTES.replace("_", "\\_").encode("utf-16")) is None
    assert keepable_bytes(b"ordinary text") == b"ordinary text"
    assert keepable_bytes(b"word " * 3_000_000) is None  # too large to scan: a pointer only
    pdf = fixture_file("docling_multi_page.pdf").read_bytes()
    assert keepable_bytes(pdf) == pdf


def test_titles_and_other_fields_are_redacted_or_rejected() -> None:
    metadata = {"doc_id": "d", "source": "file:///n.md", "version": "v", "title": SECRET_NOTES}
    result = validate_text("A document about deployments.", metadata, ValidationSettings())
    _no_secret(result.metadata["title"])
    assert result.metadata.keys() == {"title"}  # identity fields stay pointers, untouched
    with pytest.raises(UnsafeContent):
        validate_text("A document.", metadata, ValidationSettings(unsafe_content="reject"))


def test_a_document_rejected_for_secrets_keeps_a_pointer_not_its_bytes(tmp_path: Path) -> None:
    from genai_ingest.run.commit import record_failure
    from genai_ingest.run.prepare import Failed, prepare
    from genai_ingest.run.runtime import Runtime
    from genai_ingest.run.summary import RunSummary

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text(SECRET_NOTES)
    settings = Settings(data_dir=tmp_path / "state")
    settings.validation.unsafe_content = "reject"
    settings.parse.isolate = False
    rt = Runtime(settings)
    [ref] = discover([str(tmp_path / "docs")], settings.sources)
    failed = prepare(ref, rt, RunSummary())
    assert isinstance(failed, Failed) and failed.raw is None
    record_failure(failed, rt, RunSummary())
    entry = rt.dlq.get(ref.doc_id)
    assert (entry.error_class, entry.source) == ("unsafe_content", ref.uri)
    assert rt.dlq.raw(entry.entry_id) is None and entry.raw_size is None
    everything = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())
    assert not [secret for secret in SECRETS if secret.encode() in everything]


# --- local folders ---------------------------------------------------------------------------

AWKWARD_NAMES = [
    "budget 2024.txt",
    "budget%202024.txt",
    "naïve résumé.txt",
    "cost $HOME.txt",
    "line\nbreak.txt",
    "semi;colon #hash ?query.txt",
    os.fsdecode(b"latin1 caf\xe9.txt"),  # not UTF-8: comes back as the same bytes
]


def test_file_uris_round_trip_awkward_names(tmp_path: Path) -> None:
    for index, name in enumerate(AWKWARD_NAMES):
        (tmp_path / name).write_bytes(f"document number {index}".encode())
    refs = discover([str(tmp_path)], SourceSettings())
    assert sorted(r.name for r in refs) == sorted(AWKWARD_NAMES)
    for ref in refs:
        assert uri_to_path(ref.uri) == str(tmp_path / ref.name)
        assert path_to_uri(uri_to_path(ref.uri)) == ref.uri
        data = fetch(ref, SourceSettings(), FAST).data
        assert data == f"document number {AWKWARD_NAMES.index(ref.name)}".encode()
    spaced = tmp_path / "budget 2024.txt"
    assert discover([spaced.as_uri()], SourceSettings())[0].uri == spaced.as_uri()


@pytest.fixture
def trap_folder(tmp_path: Path) -> Path:
    """A folder with one document and every kind of entry that is not one."""
    outside = tmp_path / "outside.txt"
    outside.write_text("root:x:0:0:root:/root:/bin/bash")
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "ok.txt").write_text("an ordinary document")
    (root / "sub" / "inner.txt").write_text("a document inside the folder")
    (root / "passwd").symlink_to(outside)
    (root / "environ").symlink_to("/proc/self/environ")
    (root / "inner-link.txt").symlink_to(root / "sub" / "inner.txt")
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "sub-link").symlink_to(root / "sub")
    os.mkfifo(root / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "socket"))
    with contextlib.suppress(PermissionError):  # not root: no device file
        os.mknod(root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    return root


def _by_name(refs: list) -> dict:
    return {ref.name: ref for ref in refs}


def test_folders_are_boundaries(trap_folder: Path) -> None:
    refs = _by_name(discover([str(trap_folder)], SourceSettings()))
    documents = {name for name, ref in refs.items() if not ref.skipped}
    assert documents == {"ok.txt", "inner.txt"}
    for name in ("passwd", "environ", "inner-link.txt", "loop-a", "dangling", "sub-link"):
        assert "symbolic link not followed" in refs[name].skipped
    assert "named pipe" in refs["pipe"].skipped
    assert "socket" in refs["socket"].skipped
    if "null" in refs:
        assert "character device" in refs["null"].skipped
    started = time.monotonic()
    for name, ref in refs.items():
        if name not in documents:
            with pytest.raises(SkippedSource) as info:
                fetch(ref, SourceSettings(), FAST)
            assert info.value.kind is ErrorKind.PERMANENT
    assert time.monotonic() - started < 5  # the FIFO was never opened for a blocking read


def test_links_inside_the_folder_are_followed_when_allowed(trap_folder: Path) -> None:
    settings = SourceSettings(follow_symlinks=True)
    listed = discover([str(trap_folder)], settings)
    refs = _by_name(listed)
    assert fetch(refs["inner-link.txt"], settings, FAST).data == b"a document inside the folder"
    linked = [r for r in listed if "/sub-link/" in uri_to_path(r.uri)]
    assert [r.name for r in linked] == ["inner.txt"] and not linked[0].skipped
    assert "leads out of the source folder" in refs["passwd"].skipped
    assert "leads out of the source folder" in refs["environ"].skipped
    assert "loop" in refs["loop-a"].skipped
    assert "broken symbolic link" in refs["dangling"].skipped


def test_a_file_swapped_for_a_link_after_listing_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("listed")
    [ref] = discover([str(tmp_path)], SourceSettings())
    (tmp_path / "doc.txt").unlink()
    (tmp_path / "doc.txt").symlink_to("/etc/passwd")
    with pytest.raises(SkippedSource, match="symbolic link"):
        fetch(ref, SourceSettings(), FAST)


def test_a_path_longer_than_path_max_fails_only_its_entry(tmp_path: Path) -> None:
    (tmp_path / "sibling.txt").write_text("the normal sibling")
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 x 250 characters > PATH_MAX (4096)
            os.mkdir("d" * 250, dir_fd=fd)
            inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with open(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as deep:
            deep.write("too deep")
    finally:
        os.close(fd)
    refs = discover([str(tmp_path)], SourceSettings())
    [sibling] = [r for r in refs if not r.skipped]
    assert sibling.name == "sibling.txt"
    assert any("PATH_MAX" in (r.skipped or "") for r in refs)


# --- URLs ------------------------------------------------------------------------------------


class Hostile(BaseHTTPRequestHandler):
    """/drip (one byte every 0.3 s), /to-file, /loop, /chain/0 (4 redirects), /ok."""

    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        Hostile.hits[self.path] = Hostile.hits.get(self.path, 0) + 1
        if self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.3)
        elif self.path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path.startswith("/chain/") and not self.path.endswith("/4"):
            self._redirect(f"/chain/{int(self.path.rsplit('/', 1)[1]) + 1}")
        else:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Hostile.hits = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


LOCAL = SourceSettings(allow_private_networks=True, download_timeout_s=1.5, max_redirects=3)


def _fetch_url(url: str, settings: SourceSettings = LOCAL) -> bytes:
    return fetch(discover([url], settings)[0], settings, RetryPolicy(attempts=1)).data


def test_a_dripping_server_is_cut_at_the_total_deadline(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"sources\.download_timeout_s") as info:
        _fetch_url(f"{server}/drip")
    assert time.monotonic() - started < 3 * LOCAL.download_timeout_s
    assert info.value.kind is ErrorKind.TRANSIENT


def test_redirects_are_checked_and_bounded(server: str) -> None:
    with pytest.raises(SourceRefused, match="only http and https"):
        _fetch_url(f"{server}/to-file")
    with pytest.raises(ResourceLimit, match="redirect loop"):
        _fetch_url(f"{server}/loop")
    with pytest.raises(ResourceLimit, match=r"sources\.max_redirects"):
        _fetch_url(f"{server}/chain/0")
    assert Hostile.hits["/to-file"] == 1  # permanent: not retried
    assert _fetch_url(f"{server}/chain/0", LOCAL.model_copy(update={"max_redirects": 5})) == b"ok"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/a.pdf",
        "http://localhost/a.pdf",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://10.0.0.8/a.pdf",
        "http://[::1]/a.pdf",
        "http://[::ffff:127.0.0.1]/a.pdf",
        "ftp://example.com/a.pdf",
    ],
)
def test_internal_addresses_and_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(SourceRefused) as info:
        check_url(url, SourceSettings())
    assert info.value.kind is ErrorKind.PERMANENT


def test_private_addresses_are_allowed_by_the_setting(server: str) -> None:
    with pytest.raises(SourceRefused, match=r"sources\.allow_private_networks"):
        _fetch_url(f"{server}/ok", SourceSettings())
    assert _fetch_url(f"{server}/ok") == b"ok"


# --- parser limits -----------------------------------------------------------------------------


def test_parse_deadlines_scale_with_the_work() -> None:
    settings = ParseSettings()
    html = b"<html><body>" + b"<div>" * 100_000 + b"x" + b"</div>" * 100_000 + b"</body></html>"
    book = b"%PDF-1.7\n" + b"<< /Type /Page /Parent 2 0 R >>\n" * 352 + b"%%EOF\n"
    assert parse_deadline_s(html, settings) < 40
    assert parse_deadline_s(book, settings) > 352 * settings.timeout_per_page_s
    assert parse_deadline_s(b"x" * 10**9, settings) == settings.max_timeout_s


def test_text_beyond_the_cap_is_too_large_naming_the_setting() -> None:
    settings = ParseSettings(isolate=False, max_text_chars=1_000_000)
    single_line = b"word " * 300_000
    with pytest.raises(DocumentTooLarge, match=r"parse\.max_text_chars"):
        parse_bounded(single_line, "one-line.txt", settings)


@pytest.fixture(scope="module")
def tight_pool() -> Iterator[tuple[ParserPool, ParseSettings]]:
    settings = ParseSettings(workers=1, timeout_s=3, worker_memory_mb=1536)
    pool = ParserPool(settings)
    assert "Warm" in pool.parse(b"# Warm\n\nworker started", "warm.md", settings).text
    yield pool, settings
    pool.close()


def test_nested_html_holds_a_worker_no_longer_than_its_deadline(tight_pool: tuple) -> None:
    pool, settings = tight_pool
    html = b"<html><body>" + b"<div>" * 100_000 + b"x" + b"</div>" * 100_000 + b"</body></html>"
    started = time.monotonic()
    try:
        parsed = pool.parse(html, "nested.html", settings)
    except DeadlineExceeded as exc:
        assert "parse.timeout_s" in exc.reason
    else:
        assert "x" in parsed.text
    assert time.monotonic() - started < parse_deadline_s(html, settings) + 15


def pptx_bomb(template: Path, inflated_mb: int) -> bytes:
    """A real PPTX whose first slide gets ``inflated_mb`` MB of text runs (a few MB zipped)."""
    out = BytesIO()
    with (
        zipfile.ZipFile(template) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb,
    ):
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename != "ppt/slides/slide1.xml":
                bomb.writestr(item, data)
                continue
            head, tail = data.split(b"</a:t>", 1)
            with bomb.open(item.filename, "w", force_zip64=True) as slide:
                slide.write(head)
                for _ in range(inflated_mb):
                    slide.write(b"A" * (1 << 20))
                slide.write(b"</a:t>" + tail)
    return out.getvalue()


def test_a_memory_bomb_hits_the_worker_cap_not_the_machine(tight_pool: tuple) -> None:
    pool, settings = tight_pool
    data = pptx_bomb(fixture_file("unstructured_sample-presentation.pptx"), inflated_mb=1100)
    assert len(data) < 5 * 2**20
    with pytest.raises(ResourceLimit, match=r"parse\.worker_memory_mb"):
        pool.parse(data, "bomb.pptx", settings.model_copy(update={"timeout_s": 120}))
    assert "still parses" in pool.parse(b"# T\n\nstill parses", "t.md", settings).text


# --- a whole run -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_hostile_folder_completes_without_leaks(trap_folder: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from flows.ingest import ingest
    from genai_ingest.run.runtime import runtime_for
    from genai_ingest.search.query import search_index

    (trap_folder / "credentials.csv").write_text(CREDENTIALS_CSV)
    (trap_folder / "notes.md").write_text(SECRET_NOTES)
    (trap_folder / "budget 2024.txt").write_text("The 2024 budget plans spending on roads.")
    (trap_folder / "budget%202024.txt").write_text("A sibling about weather in the mountains.")
    (trap_folder / "one-line.txt").write_bytes(b"word " * 300_000)
    settings = Settings(data_dir=tmp_path / "state")
    settings.parse.max_text_chars = 1_000_000
    report = ingest(sources=[str(trap_folder)], settings=settings)
    rt = runtime_for(settings)
    classes = {Path(uri_to_path(e.source)).name: e.error_class for e in rt.dlq.entries()}
    assert classes["one-line.txt"] == "too_large"
    assert classes["passwd"] == classes["environ"] == classes["pipe"] == "skipped_source"
    assert report["documents_indexed"] >= 5
    hits = search_index(settings, "budget roads", k=20)
    budget = next(h for h in hits if h.metadata.get("source", "").endswith("budget%202024.txt"))
    assert "roads" in budget.text
    _no_secret(" ".join(h.text + str(h.metadata) for h in search_index(settings, "aws key", k=20)))
    everything = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())
    with get_client(sync_client=True) as client:  # the run's Prefect artifacts (DLQ table...)
        artifacts = client.read_artifacts()
    everything += "".join(f"{a.data} {a.description}" for a in artifacts).encode()
    assert any("skipped_source" in str(a.data) for a in artifacts)
    for secret in (*SECRETS, "root:x:0:0"):
        assert secret.encode() not in everything
