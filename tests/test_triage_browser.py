"""The triage app in a real browser: ``marimo run`` on 127.0.0.1, headless Debian Chromium driven
by Playwright. Select the password-protected PDF, supply its password, replay it: the open count
drops and the entry shows as resolved. Takes a screenshot; with GENAI_INGEST_UPDATE_SCREENSHOT=1
it also replaces docs/img/dlq_triage.png (a plain test run leaves the checkout clean)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_triage import PDF, copy_state, seed_template

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-gpu",
]
DOCS_SCREENSHOT = REPO / "docs" / "img" / "dlq_triage.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"marimo exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


@pytest.fixture
def triage_app(
    prefect_server: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> Iterator[str]:
    """The triage app served by ``marimo run`` over a fresh copy of the seeded DLQ."""
    data_dir = copy_state(seed_template(tmp_path_factory.getbasetemp()), tmp_path / "state")
    port = free_port()
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "GENAI_INGEST_DATA_DIR": str(data_dir)}
    marimo = Path(sys.executable).with_name("marimo")
    log = (tmp_path / "marimo.log").open("wb")
    command = [marimo, "run", "notebooks/dlq_triage.py", "--headless", "--no-token"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_replay_with_password_resolves_the_entry(triage_app: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.goto(triage_app)
            open_count = page.locator("marimo-stat[data-label='\"Open entries\"']")
            expect(open_count).to_have_attribute("data-value", "3", timeout=90_000)

            page.get_by_role("row").filter(has_text=PDF).get_by_role("checkbox").click()
            expect(page.get_by_role("heading", name="Actions on 1 selected")).to_be_visible()
            password = page.locator("input[type=password]")
            password.fill("password")
            password.press("Enter")
            preview_note = page.get_by_text("page 1 of 1")
            expect(preview_note.first).to_be_attached(timeout=30_000)
            page.get_by_role("tab", name="Preview").click()
            expect(preview_note.filter(visible=True)).to_have_count(1)

            page.get_by_role("button", name="Replay now").click()
            expect(open_count).to_have_attribute("data-value", "2", timeout=120_000)
            expect(page.get_by_text(f"Replayed 1: 1 resolved ({PDF})")).to_be_visible()
            acted = page.get_by_role("row").filter(has_text=PDF)
            expect(acted.filter(has_text="resolved")).to_have_count(1)
            expect(page.get_by_role("row").filter(has_text=PDF)).to_have_count(1)

            status_filter = page.locator("select:has(option:text-is('discarded'))")
            status_filter.select_option("all")
            row = page.get_by_role("row").filter(has_text=PDF).filter(has_text="resolved")
            expect(row).to_have_count(2)  # in the entries table and in "entries acted on"
            row.first.get_by_role("checkbox").click()
            expect(page.get_by_role("heading", name=f"{PDF} · resolved")).to_be_visible()
            page.get_by_role("tab", name="Preview").click()
            expect(preview_note.filter(visible=True)).to_have_count(1)
            time.sleep(1)  # let the chart and the page image paint
            shot = tmp_path / "dlq_triage.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 0
    if os.environ.get("GENAI_INGEST_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, DOCS_SCREENSHOT)
