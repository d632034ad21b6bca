"""clean_text on real corpus text and on small Markdown documents."""

from __future__ import annotations

from pathlib import Path

from genai_ingest.config import CleanSettings
from genai_ingest.text.clean import clean_text

CORPUS = Path(__file__).parent / "data" / "corpus"
SETTINGS = CleanSettings()


def corpus_text(relative: str) -> str:
    path = CORPUS / relative
    return path.read_text(encoding="utf-8")


def paged(pages: list[str]) -> str:
    return "\f".join(pages)


def test_repairs_real_mojibake() -> None:
    raw = corpus_text("good/text/unstructured_norwich-city.txt")
    mojibake_en_dash = "\u00e2\u0080\u0093"  # UTF-8 of "–" read as Latin-1
    assert raw.count(mojibake_en_dash) > 10
    cleaned = clean_text(raw, SETTINGS)
    assert "\u00e2\u0080" not in cleaned
    assert "Youth career\n–1986 Watford" in cleaned


def test_repairs_windows_1252_mojibake() -> None:
    assert clean_text("The 2010â€“11 season, â€œquotedâ€\x9d", SETTINGS) == (
        "The 2010–11 season, “quoted”"
    )


def test_keeps_legitimate_text() -> None:
    text = (
        "# Résumé\n\n“Quoted” text, naïve café, x² + y² = z², ½ cup, 10 µm, Ångström.\n\n"
        "| Name | Wert |\n|---|---|\n| Straße | 3 |\n\n"
        "- 日本語のテキスト\n- 中文文本\n- 한국어 텍스트\n"
        "- العربية والفارسی\n- עברית\n- ภาษาไทย"
    )
    assert clean_text(text, SETTINGS) == text


def test_folds_extraction_artefacts() -> None:
    text = "ﬁnancial\u00a0report\u200b with\u00adsoft hyphen, ＡＢＣ１２３ and ﻻ"
    assert clean_text(text, SETTINGS) == "financial report withsoft hyphen, ABC123 and لا"


def test_removes_control_characters_but_keeps_tabs_and_newlines() -> None:
    text = "col\x00umn\x07 one\tcolumn two\r\nnext\x1b line\x7f\rend\x0b"
    assert clean_text(text, SETTINGS) == "column one\tcolumn two\nnext line\nend"


def test_removes_page_labels_and_running_headers() -> None:
    bodies = [
        "The committee met to discuss the budget for the coming year.",
        "Several members raised concerns about the maintenance costs.",
        "A vote was taken and the proposal was accepted unanimously.",
        "The chair closed the meeting and thanked all participants.",
    ]
    pages = [
        f"ACME Corp Annual Report 2023 - Section {n}\n\n{body}\n\nPage {n} of 4\n\n{n}"
        for n, body in enumerate(bodies, start=1)
    ]
    cleaned = clean_text(paged(pages), SETTINGS)
    assert cleaned == "\n\n".join(bodies)


def test_repeated_line_needs_enough_pages() -> None:
    settings = CleanSettings(repeated_line_min_pages=3, repeated_line_min_share=0.5)
    pages = ["Draft\n\nFirst page text.", "Draft\n\nSecond page text.", "Third page text."]
    assert "Draft" in clean_text(paged(pages), settings)
    pages = [f"Draft\n\nPage number {n} text." for n in range(3)]
    assert "Draft" not in clean_text(paged(pages), settings)


def test_headings_and_table_rows_are_never_page_furniture() -> None:
    pages = [f"## Results\n\n| Year | Value |\n|---|---|\n| 20{n}0 | {n} |" for n in range(1, 5)]
    cleaned = clean_text(paged(pages), SETTINGS)
    assert cleaned.count("## Results") == 4
    assert cleaned.count("| Year | Value |") == 4


def test_bare_numbers_inside_a_page_stay() -> None:
    page = "Intro\n\nSome text\n\nThe answer is\n\n42\n\nand more\n\nclosing words\n\nend\n\n7"
    cleaned = clean_text(paged([page, page.replace("Intro", "Other")]), SETTINGS)
    assert cleaned.count("\n42\n") == 2
    assert "\n7" not in cleaned
    assert clean_text("Annual Report\n\n2024", SETTINGS) == "Annual Report\n\n2024"


def test_dehyphenates_across_line_breaks() -> None:
    text = "The infor-\nmation was well-\nknown in Baden-\nWürttemberg, not 3-\n4 times."
    assert clean_text(text, SETTINGS) == (
        "The information was wellknown in Baden-\nWürttemberg, not 3-\n4 times."
    )


def test_whitespace_normalised_and_structure_kept() -> None:
    text = "\n\n#  Title   here\n\n\n\n\nSome    words\t here.   \n  - nested   item\n\f\f\nEnd  "
    assert (
        clean_text(text, SETTINGS) == "# Title here\n\nSome words\t here.\n  - nested item\n\nEnd"
    )


def test_real_markdown_keeps_its_structure() -> None:
    raw = corpus_text("good/text/docling_duck.md")
    cleaned = clean_text(raw, SETTINGS)
    assert "## Let’s eat" in cleaned
    assert "| Berries | Blueberry, Strawberry, Cranberry | 150 |" in cleaned
    assert "\n\n\n" not in cleaned
    assert clean_text(cleaned, SETTINGS) == cleaned  # idempotent
