"""A secret that a PDF's line breaks cut leaves no part of itself in the indexed text."""

from __future__ import annotations

import pytest

from genai_ingest.config import CleanSettings, ParseSettings, ValidationSettings
from genai_ingest.failures.redact import redact_secrets
from genai_ingest.parse.document import parse_document
from genai_ingest.text.clean import clean_text
from genai_ingest.text.validate import validate_text
from tests.pdfgen import text_pdf

AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PIECE = 8  # no run of this many characters of the key may survive


def _indexed_text(pdf: bytes) -> str:
    """The text the pipeline validates and chunks for a PDF: parsed, cleaned, validated."""
    parsed = parse_document(pdf, "notes.pdf", ParseSettings(isolate=False))
    text = clean_text(parsed.text, CleanSettings(), hard_wrapped=True)
    metadata = {"doc_id": "d", "source": "file:///notes.pdf", "version": "v"}
    return validate_text(text, metadata, ValidationSettings()).text


def _leaked_pieces(text: str) -> list[str]:
    pieces = {AWS_SECRET[i : i + PIECE] for i in range(len(AWS_SECRET) - PIECE + 1)}
    return sorted(piece for piece in pieces if piece in text)


@pytest.mark.parametrize("cut", [1, 15, 25, 39])
def test_a_labelled_key_cut_by_a_line_break_is_redacted_whole(cut: int) -> None:
    pdf = text_pdf(
        [
            [
                "Deployment notes for the release pipeline of the billing service team.",
                f"The release job reads aws_secret_access_key = {AWS_SECRET[:cut]}",
                f"{AWS_SECRET[cut:]} from the vault before every deployment of the service.",
                "Rotate it monthly.",
            ]
        ]
    )
    text = _indexed_text(pdf)
    assert not _leaked_pieces(text), text
    assert "[REDACTED:aws_secret_key] from the vault" in text


@pytest.mark.parametrize("cut", [6, 20, 33])
def test_an_unlabelled_key_pair_cut_across_rows_is_redacted_whole(cut: int) -> None:
    pdf = text_pdf(
        [
            [
                "Service accounts",
                f"deploy-bot    {AWS_ID}    {AWS_SECRET[:cut]}",
                f"{AWS_SECRET[cut:]}    rotated monthly by the platform team",
                f"backup-bot    {AWS_SECRET[:cut]}",
                f"{AWS_SECRET[cut:]}    {AWS_ID}    read only",
            ]
        ]
    )
    text = _indexed_text(pdf)
    assert not _leaked_pieces(text), text
    assert "rotated monthly by the platform team" in text


def test_prose_around_a_key_id_is_not_taken_for_a_cut_key() -> None:
    prose = (
        f"The id {AWS_ID} belongs to the deployment robot of the Billing team.\n"
        "Rotate it every 30 days using the AWS Console and then notify security."
    )
    text, kinds = redact_secrets(prose)
    assert "aws_secret_key" not in kinds
    assert "Rotate it every 30 days using the AWS Console and then notify security." in text
