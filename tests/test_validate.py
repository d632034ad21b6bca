"""validate_text over the real corpus (no false positives) and over real kinds of garbage."""

from __future__ import annotations

import base64
import hashlib
import html
import random
import re
from pathlib import Path

import pypdfium2
import pytest
from charset_normalizer import from_bytes

from genai_ingest.config import CleanSettings, ValidationSettings
from genai_ingest.failures.errors import (
    DocumentTooLarge,
    EmptyDocument,
    GarbageContent,
    LanguageNotAllowed,
    Stage,
    UnsafeContent,
    ValidationFailed,
)
from genai_ingest.text.clean import clean_text
from genai_ingest.text.validate import check_size, validate_text

CORPUS = Path(__file__).parent / "data" / "corpus"
META = {"doc_id": "d1", "source": "file:///x", "version": "v1"}
SETTINGS = ValidationSettings()
PROSE = "The quick brown fox jumps over the lazy dog while the farmer watches from the porch."

# Expected language per corpus file whose language the manifest states unambiguously.
LANGUAGES = {
    "good/pdf/docling_right_to_left_01.pdf": "ar",
    "good/pdf/pdfminer_jo.pdf": "ja",
    "good/pdf/pdfplumber_2023-06-20-PV.pdf": "fr",
    "good/text/unstructured_book-war-and-peace-1p.txt": "en",
}


def corpus_files(*patterns: str) -> list[str]:
    return sorted(str(p.relative_to(CORPUS)) for pat in patterns for p in CORPUS.glob(pat))


def extract(relative: str) -> str:
    """Text of a corpus file: decoded text, tag-stripped HTML, or a PDF's text layer."""
    path = CORPUS / relative
    if path.suffix == ".pdf":
        pdf = pypdfium2.PdfDocument(str(path))
        return "\f".join(page.get_textpage().get_text_range() for page in pdf)
    text = str(from_bytes(path.read_bytes()).best())
    if path.suffix in (".html", ".htm"):
        text = re.sub(r"(?is)<(script|style)\b.*?</\1>|<[^>]+>", " ", text)
        text = html.unescape(text)
    return text


def validate(text: str, settings: ValidationSettings = SETTINGS):
    return validate_text(clean_text(text, CleanSettings()), META, settings)


# --- no false positives over the real corpus -------------------------------------------------

GOOD = corpus_files("good/text/*", "good/html/*", "good/sheet/*.csv", "good/pdf/*.pdf")


@pytest.mark.parametrize("relative", GOOD)
def test_real_documents_are_not_garbage(relative: str) -> None:
    result = validate(extract(relative))
    assert result.redactions == []
    if relative in LANGUAGES:
        assert result.language == LANGUAGES[relative]


def test_corpus_covers_many_scripts() -> None:
    assert len(GOOD) >= 30
    assert set(LANGUAGES) <= set(GOOD)


# --- garbage ---------------------------------------------------------------------------------


def random_bytes(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def ciphertext(plain: bytes) -> bytes:
    """Stream-cipher output (SHA-256 counter keystream XOR plaintext): AES-CTR-like bytes."""
    blocks = (hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(len(plain) // 32 + 1))
    return bytes(a ^ b for a, b in zip(plain, b"".join(blocks), strict=False))


def test_base64_file_from_corpus_is_garbage() -> None:
    path = CORPUS / "bad/unstructured_hebrew-text-base64-iso88598i.txt"
    with pytest.raises(GarbageContent, match="base64-encoded payload, not text") as err:
        validate(path.read_text())
    assert err.value.stage is Stage.VALIDATE
    assert not err.value.replayable


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (random_bytes(3000).decode("latin-1"), "high-entropy"),
        (random_bytes(3000).decode("cp1252", "ignore"), "high-entropy"),
        (random_bytes(3000).decode("utf-8", "ignore"), "high-entropy"),
        (random_bytes(160).decode("latin-1"), "high-entropy"),
        (random_bytes(3000).decode("utf-8", "replace"), "binary noise"),
        (random_bytes(3000).decode("utf-8", "surrogateescape"), "binary noise"),
        (random_bytes(3000).decode("utf-16-le", "replace"), "binary noise"),
        (ciphertext(PROSE.encode() * 40).decode("latin-1"), "high-entropy"),
        (base64.encodebytes(ciphertext(PROSE.encode() * 40)).decode(), "base64"),
        (ciphertext(PROSE.encode() * 40).hex(), "hex-encoded"),
        (f"Attachment follows.\n{base64.b64encode(random_bytes(600)).decode()}\n", "base64"),
    ],
    ids=[
        "random-latin1",
        "random-cp1252",
        "random-utf8-ignore",
        "random-latin1-short",
        "random-utf8-replace",
        "random-surrogateescape",
        "random-utf16",
        "ciphertext-latin1",
        "ciphertext-base64",
        "ciphertext-hex",
        "prose-plus-base64",
    ],
)
def test_noise_is_garbage(text: str, reason: str) -> None:
    with pytest.raises(GarbageContent, match=reason):
        validate(text)


def test_unrepairable_mojibake_is_garbage() -> None:
    text = ("Zürich über Straße, „naïve“ café – São Paulo. " * 20).encode().decode("cp850")
    with pytest.raises(GarbageContent, match="mojibake"):
        validate(text)


def test_code_maths_and_numbers_are_not_garbage() -> None:
    text = (
        "def area(r: float) -> float:\n    return math.pi * r ** 2  # π·r²\n\n"
        "∑_{i=1}^{n} x_i² ≤ (∫₀¹ f(x) dx)² ± ε, ∀ε > 0\n\n"
        "| id | sha256 | value |\n|---|---|---|\n"
        + "".join(f"| {i} | {i * 7919:08x} | {i * 3.14159:.4f} |\n" for i in range(60))
    )
    assert validate(text).text


def test_sha256_checksum_lines_with_prose_are_not_garbage() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    text = f"Release notes for version 2.1 with many fixes.\n\nChecksum: {digest}\n\n{PROSE * 3}"
    assert validate(text).language == "en"


# --- emptiness and metadata ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "  \n\t  ", "\f\f"])
def test_empty_text(text: str) -> None:
    with pytest.raises(EmptyDocument, match="no text"):
        validate(text)


def test_too_short_text() -> None:
    with pytest.raises(EmptyDocument, match="too little text after cleaning: 6 chars, 1 words"):
        validate("wombat")
    with pytest.raises(EmptyDocument, match="1 words"):
        validate("Supercalifragilisticexpialidocious")
    assert validate("Some text").text == "Some text"  # tiny but real documents are kept


def test_cjk_words_are_counted_per_character() -> None:
    result = validate("今天天气很好，我们去公园散步吧。然后一起吃饭。")
    assert result.language == "zh"


def test_missing_metadata() -> None:
    with pytest.raises(ValidationFailed, match="missing metadata: source, version"):
        validate_text(PROSE, {"doc_id": "d", "source": ""}, SETTINGS)


def test_check_size() -> None:
    check_size(100, 100)
    with pytest.raises(DocumentTooLarge, match="101 bytes") as err:
        check_size(101, 100)
    assert err.value.stage is Stage.FETCH


# --- language --------------------------------------------------------------------------------


def test_language_allow_list() -> None:
    settings = ValidationSettings(allowed_languages=["en", "fr"])
    assert validate(PROSE, settings).language == "en"
    german = "Der schnelle braune Fuchs springt über den faulen Hund, während der Bauer zusieht."
    with pytest.raises(LanguageNotAllowed, match=r"language 'de' not in allow-list \['en', 'fr'\]"):
        validate(german, settings)


def test_language_unknown_for_numbers_only_passes_allow_list() -> None:
    settings = ValidationSettings(allowed_languages=["en"])
    table = "| id | qty | sum |\n| 1 | 2 | 3 |\n| 4 | 5 | 6 |\n| 7 | 8 | 9 |\n| 10 | 11 | 12 |"
    result = validate(table, settings)
    assert result.language is None


# --- unsafe content --------------------------------------------------------------------------

AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi\n"
    "Z1BjP5CE/Wm/Rr500PRK+Lh9x5eJPo5CAZ3/ANBE0sTK0ZsDGMak2m1g7\n-----END RSA PRIVATE KEY-----"
)
GCP = (
    '{"type": "service_account", "project_id": "demo", '
    '"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n'
    '-----END PRIVATE KEY-----\\n", "client_email": "svc@demo.iam.gserviceaccount.com"}'
)
AZURE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURE = (
    "DefaultEndpointsProtocol=https;AccountName=devstore;"
    f"AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net"
)
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SLACK = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
CONFIG = (
    f"{PROSE}\n\n```\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n"
    f"{AZURE}\nGITHUB_TOKEN={GITHUB}\nSLACK_TOKEN={SLACK}\ndb_password='hunter2secret'\n```\n\n"
    f"{PEM}\n\n{GCP}\n"
)
SECRETS = [
    AWS_ID,
    AWS_SECRET,
    AZURE_KEY,
    GITHUB,
    SLACK,
    "hunter2secret",
    "MIIEpAIBAAKCAQEA",
    "MIIEvQ",
]
KINDS = [
    "aws_access_key",
    "aws_secret_key",
    "azure_storage_key",
    "gcp_service_account_key",
    "github_token",
    "password",
    "private_key",
    "slack_token",
]


def test_reject_unsafe_content_names_kinds_never_secrets() -> None:
    settings = ValidationSettings(unsafe_content="reject")
    with pytest.raises(UnsafeContent) as err:
        validate(CONFIG, settings)
    assert err.value.reason == f"contains {', '.join(KINDS)}"
    assert not any(secret in str(err.value) for secret in SECRETS)
    assert not err.value.replayable


def test_redact_unsafe_content() -> None:
    result = validate(CONFIG, ValidationSettings(unsafe_content="redact"))
    assert result.redactions == KINDS
    assert not any(secret in result.text for secret in SECRETS)
    assert "aws_access_key_id = [REDACTED:aws_access_key]" in result.text
    assert "AccountKey=[REDACTED:azure_storage_key];EndpointSuffix" in result.text
    assert '"private_key": "[REDACTED:gcp_service_account_key]"' in result.text
    assert "[REDACTED:private_key]" in result.text
    assert "db_password='[REDACTED:password]'" in result.text
    assert PROSE in result.text


def test_allow_unsafe_content() -> None:
    result = validate(CONFIG, ValidationSettings(unsafe_content="allow"))
    assert result.redactions == []
    assert AWS_SECRET in result.text


def test_private_key_alone_is_reported_as_unsafe_not_garbage() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + base64.encodebytes(random_bytes(900)).decode()
    with pytest.raises(UnsafeContent, match="contains private_key"):
        validate(
            key + "-----END OPENSSH PRIVATE KEY-----", ValidationSettings(unsafe_content="reject")
        )
    with pytest.raises(EmptyDocument):
        validate(key, ValidationSettings(unsafe_content="redact"))


def test_prose_about_passwords_is_not_a_secret() -> None:
    text = f"Choose a password: it must be long. Set password=<your password> in the file. {PROSE}"
    assert validate(text, ValidationSettings(unsafe_content="reject")).redactions == []


def test_numbers_only_is_not_a_document() -> None:
    with pytest.raises(EmptyDocument, match="only numbers and punctuation"):
        validate("2021\n\n3\n\n31 -- 12.5 / 7")
