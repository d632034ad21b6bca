"""The package layers (docs/architecture.md) are enforced: ``lint-imports`` keeps the tree's
contracts, and breaks, naming the rule and the import, on a copy with one bad import added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("genai_ingest", "flows", "tasks", "blocks")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": str(LINT_IMPORTS.parent)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "rule", "named_import"),
    [
        (  # a stage reaching up into the run
            "genai_ingest/parse/pdf_bombs.py",
            "from genai_ingest.run import runtime",
            "Layers:",
            "genai_ingest.parse.pdf_bombs -> genai_ingest.run.runtime",
        ),
        (  # one stage importing another: stages are independent
            "genai_ingest/text/reflow.py",
            "from genai_ingest.embed import encoders",
            "Layers:",
            "genai_ingest.text.reflow -> genai_ingest.embed.encoders",
        ),
        (  # the cycle this layout broke: the parser and its worker pool
            "genai_ingest/parse/document.py",
            "from genai_ingest.parse import isolation",
            "No import cycles",
            "No cycles are allowed in genai_ingest.parse.",
        ),
        (  # a module beside the stage folders, in no layer
            "genai_ingest/helpers.py",
            "from genai_ingest import models",
            "Every module directly under genai_ingest/ belongs to a layer",
            "- genai_ingest.helpers",
        ),
        (  # orchestration inside a stage
            "genai_ingest/text/chunk.py",
            "import prefect",
            "no Prefect, flows or tasks",
            "genai_ingest.text.chunk -> prefect",
        ),
    ],
)
def test_a_bad_import_breaks_the_contract_that_forbids_it(
    tmp_path: Path, module: str, bad_import: str, rule: str, named_import: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    before = target.read_text() if target.exists() else ""
    target.write_text(before + f"\n{bad_import}  # noqa: E402\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert rule in broken, result.stdout
    assert named_import in broken, result.stdout
    assert "docs/architecture.md" in broken  # the guidance: where to move the shared piece
