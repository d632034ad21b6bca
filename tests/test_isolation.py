"""Parsing in worker processes: real parsers, real crashes, real timeouts (no parser mocks)."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from genai_ingest.config import ParseSettings
from genai_ingest.failures import errors
from genai_ingest.failures.errors import (
    CorruptDocument,
    DeadlineExceeded,
    IngestError,
    PasswordRequired,
    Stage,
)
from genai_ingest.parse.document import parse_document
from genai_ingest.parse.isolation import ParserPool, parse_isolated
from tests.conftest import fixture_file

REPO = Path(__file__).resolve().parent.parent
SETTINGS = ParseSettings(workers=2, timeout_s=60)
MARKDOWN = b"# Isolation\n\nA short markdown document about parser worker processes."


def _segfault() -> None:
    """Test double for a crashing native parser: the worker dies of a real SIGSEGV."""
    os.kill(os.getpid(), signal.SIGSEGV)


class _Odd(CorruptDocument):
    """A subclass whose ``__init__`` does not take ``reason``."""

    def __init__(self, path: str, *, stage: Stage | None = None) -> None:
        super().__init__(f"bad member {path}", stage=stage)


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    parser_pool = ParserPool(SETTINGS)
    yield parser_pool
    parser_pool.close()


def _read(name: str) -> bytes:
    return fixture_file(name).read_bytes()


def _assert_still_parses(pool: ParserPool) -> None:
    assert "parser worker processes" in pool.parse(MARKDOWN, "next.md", SETTINGS).text


def test_errors_round_trip_through_pickle() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type)]
    for cls in (c for c in classes if issubclass(c, IngestError)):
        error = cls("why", stage=Stage.PARSE)
        error.retry_after = 2.5
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls
        assert (copy.reason, copy.stage, copy.retry_after) == ("why", Stage.PARSE, 2.5)
        assert str(copy) == "why"
    odd = pickle.loads(pickle.dumps(_Odd("word/document.xml", stage=Stage.PARSE)))
    assert (type(odd), odd.reason, odd.stage) == (_Odd, "bad member word/document.xml", "parse")


def test_pdf_parses_as_in_process(pool: ParserPool) -> None:
    data = _read("docling_multi_page.pdf")
    isolated = pool.parse(data, "multi.pdf", SETTINGS)
    direct = parse_document(data, "multi.pdf", SETTINGS)
    assert isolated.text == direct.text
    assert (isolated.parser, isolated.pages) == (direct.parser, direct.pages)
    assert len(isolated.text) > 1000


def test_worker_errors_keep_class_and_reason(pool: ParserPool) -> None:
    data = _read("unstructured_password.pdf")
    with pytest.raises(PasswordRequired) as direct:
        parse_document(data, "secret.pdf", SETTINGS)
    with pytest.raises(PasswordRequired) as isolated:
        pool.parse(data, "secret.pdf", SETTINGS)
    assert isolated.value.reason == direct.value.reason
    assert isolated.value.stage is Stage.PARSE


def test_other_worker_exceptions_are_classified(pool: ParserPool) -> None:
    with pytest.raises(CorruptDocument, match="parse failed: ValueError"):
        pool._submit(int, "not a number", timeout=30)


def test_crashed_worker_fails_only_its_document(pool: ParserPool) -> None:
    with pytest.raises(CorruptDocument, match=r"crashed \(SIGSEGV, exit code -11\)") as info:
        pool._submit(_segfault, timeout=30)
    assert info.value.stage is Stage.PARSE
    _assert_still_parses(pool)


def test_stuck_worker_is_killed_at_the_timeout(pool: ParserPool) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"parse timed out after 1s.*parse.timeout_s"):
        pool._submit(time.sleep, 60, timeout=1)
    assert time.monotonic() - started < 15
    _assert_still_parses(pool)


def test_pool_recovers_when_idle_workers_die(pool: ParserPool) -> None:
    _assert_still_parses(pool)
    for worker in multiprocessing.active_children():
        if worker.name == "pebble_pool_worker":
            os.kill(worker.pid, signal.SIGKILL)
    time.sleep(0.5)  # pebble notices and marks the pool broken
    _assert_still_parses(pool)


def test_concurrent_threads(pool: ParserPool) -> None:
    documents = [
        ("docling_duck.md", "duck"),
        ("docling_csv-comma.csv", "csv"),
        ("docling_kvp_data_example.html", "html"),
    ]

    def parse_all(_: int) -> list[str]:
        return [pool.parse(_read(name), name, SETTINGS).text for name, _kind in documents]

    with ThreadPoolExecutor(4) as threads:
        results = list(threads.map(parse_all, range(4)))
    expected = [parse_document(_read(name), name, SETTINGS).text for name, _ in documents]
    assert results == [expected] * 4


def test_isolation_off_parses_in_process() -> None:
    settings = ParseSettings(isolate=False)
    assert parse_isolated(MARKDOWN, "a.md", settings).text == (
        parse_document(MARKDOWN, "a.md", settings).text
    )


@pytest.mark.slow
def test_interpreter_exits_promptly_without_leftover_workers() -> None:
    script = textwrap.dedent(
        f"""
        import multiprocessing
        from pathlib import Path
        from genai_ingest.config import ParseSettings
        from genai_ingest.parse.isolation import parse_isolated
        data = Path({str(fixture_file("docling_multi_page.pdf"))!r}).read_bytes()
        print(len(parse_isolated(data, "multi.pdf", ParseSettings()).text))
        print(*[p.pid for p in multiprocessing.active_children()])
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        length = child.stdout.readline()
        pids = [int(pid) for pid in child.stdout.readline().split()]
        parsed = time.monotonic()
        assert child.wait(timeout=60) == 0
    assert time.monotonic() - parsed < 10
    assert int(length) > 1000
    assert len(pids) == 2
    time.sleep(0.5)
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
