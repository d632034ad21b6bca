"""One list of system packages (deploy/apt-packages.txt) for both CI entry points."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO

INSTALLER = "deploy/install-apt-packages"


def test_both_ci_entry_points_install_the_one_list() -> None:
    local = (REPO / ".ci/run").read_text()
    hosted = (REPO / ".github/workflows/ci.yml").read_text()
    hosted_test_job = hosted.split("elasticsearch-8:")[0]
    for script in (local, hosted_test_job):
        assert INSTALLER in script
        assert "apt-get install" not in script


def test_the_list_names_libreoffice_and_the_chinese_ocr_model() -> None:
    printed = subprocess.run(
        [str(REPO / INSTALLER), "--print"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"libreoffice-core", "tesseract-ocr", "tesseract-ocr-chi-sim"} <= set(printed)
    assert "chromium" in printed or "chromium-browser" in printed
