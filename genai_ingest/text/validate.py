"""Validate cleaned text: metadata, size, emptiness, garbage, language, secrets.

Every failure here is permanent (the same text fails the same way), so nothing is retried.

Garbage heuristics (thresholds checked over every text, HTML and PDF text layer of the test
corpus, incl. Korean, Chinese, Japanese, Arabic, Persian, maths, code and numeric tables, where
the largest values seen were: bad share 0.005, encoded share 0, Latin-text entropy 5.7 bits,
scripts per window 3.0, mojibake 0 per 1000):

* binary noise: >= 10 % of the characters are U+FFFD, controls, private-use, unassigned or
  surrogates (bytes decoded with ``errors="replace"``/``surrogateescape``, broken fonts);
* encoded payload: >= 50 % of the characters are in base64 runs (>= 40 chars, mixed case and
  digits) or hex runs (>= 32 chars);
* ciphertext-like noise: text made of Latin-range characters with a character entropy
  >= 6.1 bits (random bytes read as Latin-1/cp1252 reach 7.5+, prose 4-5, code/maths < 6);
* script soup: on average >= 5 scripts per 32 consecutive letters (random bytes read as
  UTF-16); real multilingual text switches script rarely (at most 3 in a window);
* mojibake that ftfy could not repair: >= 8 ftfy "badness" hits and >= 5 per 1000 characters.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import ftfy.badness
import py3langid

from genai_ingest.config import ValidationSettings
from genai_ingest.failures.errors import (
    DocumentTooLarge,
    EmptyDocument,
    GarbageContent,
    LanguageNotAllowed,
    Stage,
    UnsafeContent,
    ValidationFailed,
)
from genai_ingest.failures.redact import find_secrets, normal_form, redact_secrets


@dataclass
class ValidatedText:
    text: str
    language: str | None
    redactions: list[str] = field(default_factory=list)  # kinds only, never the secret
    metadata: dict = field(default_factory=dict)  # descriptive fields after the secrets policy


# --- size, metadata, emptiness ---------------------------------------------------------------


def check_size(size_bytes: int, limit: int, *, stage: Stage = Stage.FETCH) -> None:
    """Reject a document larger than ``limit`` bytes."""
    if size_bytes > limit:
        raise DocumentTooLarge(f"{size_bytes} bytes exceeds the limit of {limit}", stage=stage)


def _check_metadata(metadata: dict, required: Iterable[str]) -> None:
    missing = [key for key in required if metadata.get(key) in (None, "")]
    if missing:
        raise ValidationFailed(f"missing metadata: {', '.join(missing)}", stage=Stage.VALIDATE)


_MARKER_RE = re.compile(r"\[REDACTED:\w+\]")
# CJK ideographs and kana count one word each: those scripts do not separate words by spaces.
_WORD_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")


def _check_length(text: str, settings: ValidationSettings) -> None:
    """Too little text (redaction markers do not count) is an empty document."""
    text = _MARKER_RE.sub("", text).strip()
    chars = len(text)
    words = len(_WORD_RE.findall(text))
    if chars < settings.min_chars or words < settings.min_words:
        raise EmptyDocument(
            f"too little text after cleaning: {chars} chars, {words} words "
            f"(minimum {settings.min_chars} chars, {settings.min_words} words)",
            stage=Stage.VALIDATE,
        )
    if sum(char.isalpha() for char in text) < settings.min_words:
        raise EmptyDocument(
            "no words: the text has only numbers and punctuation", stage=Stage.VALIDATE
        )


# --- secrets (patterns in genai_ingest.failures.redact) -----------------------------------------


def handle_secrets(text: str, policy: str) -> tuple[str, list[str]]:
    """``text`` after the ``validation.unsafe_content`` policy (``UnsafeContent`` on reject)."""
    if policy == "allow":
        return text, []
    if policy == "reject":
        kinds = find_secrets(text)
        if kinds:
            raise UnsafeContent(f"contains {', '.join(kinds)}", stage=Stage.VALIDATE)
        return text, []
    return redact_secrets(text)


_IDENTITY_METADATA = {"doc_id", "source", "source_type", "version", "parser", "format"}


def _described_metadata(metadata: dict, policy: str, redactions: list[str]) -> dict:
    """String metadata that describes the document (title, author, headings...) after the
    secrets policy; identity fields (id, source URI, version) are pointers and stay as they are."""
    described = {}
    for key, value in metadata.items():
        if key in _IDENTITY_METADATA or not isinstance(value, str):
            continue
        described[key], kinds = handle_secrets(normal_form(value), policy)
        redactions += kinds
    return described


# --- garbage ---------------------------------------------------------------------------------

_BAD_SHARE = 0.10
_ENCODED_SHARE = 0.5
_LATIN_SHARE = 0.9
_NOISE_ENTROPY_BITS = 6.1
_SCRIPTS_PER_WINDOW = 5.0
_SCRIPT_WINDOW = 32
_MOJIBAKE_MIN = 8
_MOJIBAKE_PER_1000 = 5.0
_MIN_STATS_CHARS = 100
_SAMPLE_CHARS = 20_000

_IGNORED_RE = re.compile(rf"https?://\S+|www\.\S+|\]\([^)]*\)|{_MARKER_RE.pattern}")
_SPACE_RE = re.compile(r"\s+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_HEX_RE = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{32,}(?![0-9A-Za-z])")
_BAD_CATEGORIES = {"Cc", "Co", "Cn", "Cs"}


def check_garbage(text: str) -> None:
    """Raise ``GarbageContent`` with a specific reason if ``text`` is not language."""
    words = _IGNORED_RE.sub(" ", text)  # URLs and redaction markers say nothing about garbage
    dense = _SPACE_RE.sub("", words)
    if not dense:
        return
    sample = _sample(dense)
    for reason in (
        _binary_noise(sample),
        _encoded_payload(words, len(dense)),
        _ciphertext_noise(sample),
        _script_soup(sample),
        _mojibake(sample),
    ):
        if reason:
            raise GarbageContent(reason, stage=Stage.VALIDATE)


def _sample(dense: str) -> str:
    """Up to ``_SAMPLE_CHARS`` characters taken from four evenly spaced places."""
    if len(dense) <= _SAMPLE_CHARS:
        return dense
    part = _SAMPLE_CHARS // 4
    step = (len(dense) - part) // 3
    return "".join(dense[i * step : i * step + part] for i in range(4))


def _binary_noise(sample: str) -> str | None:
    bad = sum(1 for ch in sample if ch == "\ufffd" or unicodedata.category(ch) in _BAD_CATEGORIES)
    share = bad / len(sample)
    if bad >= 8 and share >= _BAD_SHARE:
        return (
            f"binary noise: {share:.0%} of the characters are replacement, control, "
            "private-use or unassigned characters"
        )
    return None


def _encoded_payload(words: str, dense_chars: int) -> str | None:
    base64 = sum(len(run) for run in _BASE64_RE.findall(words) if _looks_base64(run))
    hexa = sum(len(run) for run in _HEX_RE.findall(words))
    if max(base64, hexa) < _ENCODED_SHARE * dense_chars:
        return None
    return "base64-encoded payload, not text" if base64 >= hexa else "hex-encoded payload, not text"


def _looks_base64(run: str) -> bool:
    """Base64 mixes upper and lower case and digits; long words or identifiers rarely do."""
    return (
        any(c.isdigit() for c in run)
        and any(c.islower() for c in run)
        and any(c.isupper() for c in run)
    )


def _entropy_bits(sample: str) -> float:
    counts = Counter(sample).values()
    total = len(sample)
    return -sum(n / total * math.log2(n / total) for n in counts)


def _ciphertext_noise(sample: str) -> str | None:
    if len(sample) < _MIN_STATS_CHARS:
        return None
    latin = sum(1 for ch in sample if ch <= "\u024f" or "\u2000" <= ch <= "\u20cf" or ch == "™")
    if latin < _LATIN_SHARE * len(sample):
        return None
    bits = _entropy_bits(sample)
    if bits >= _NOISE_ENTROPY_BITS:
        return (
            f"high-entropy character noise ({bits:.1f} bits/char): "
            "ciphertext or binary data decoded as text"
        )
    return None


def _script(ch: str) -> str:
    """Approximate Unicode script of a letter: the first word of its name (LATIN, CJK, ...)."""
    return unicodedata.name(ch, "?").split(" ", 1)[0]


def _script_soup(sample: str) -> str | None:
    letters = [ch for ch in sample if ch.isalpha()]
    windows = range(0, len(letters) - _SCRIPT_WINDOW + 1, _SCRIPT_WINDOW)
    if len(windows) < 3:
        return None
    scripts = [len({_script(ch) for ch in letters[i : i + _SCRIPT_WINDOW]}) for i in windows]
    mean = sum(scripts) / len(scripts)
    if mean >= _SCRIPTS_PER_WINDOW:
        return f"random characters from many scripts ({mean:.1f} per {_SCRIPT_WINDOW} letters)"
    return None


def _mojibake(sample: str) -> str | None:
    hits = ftfy.badness.badness(sample)
    rate = hits * 1000 / len(sample)
    if hits >= _MOJIBAKE_MIN and rate >= _MOJIBAKE_PER_1000:
        return (
            f"mojibake that could not be repaired ({rate:.0f} suspicious sequences per 1000 chars)"
        )
    return None


# --- language --------------------------------------------------------------------------------

_MIN_LANGUAGE_LETTERS = 20
_NO_LANGUAGE = "zxx"
# py3langid labels a few varieties with ISO 639-3 codes: fold those that have a 639-1
# macrolanguage; languages without a 639-1 code (e.g. "kab", "pcm") keep their 639-3 code.
_ISO_639_1 = {"ary": "ar", "arz": "ar", "yue": "zh", "wuu": "zh", "gug": "gn", "uzs": "uz"}
_NON_LANGUAGE_RE = re.compile(rf"https?://\S+|{_MARKER_RE.pattern}|[|#*_`>\[\]()\d-]+")


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the main language, None where there are too few letters to tell."""
    sample = _NON_LANGUAGE_RE.sub(" ", text[: _SAMPLE_CHARS * 2])
    if sum(ch.isalpha() for ch in sample) < _MIN_LANGUAGE_LETTERS:
        return None
    language, _score = py3langid.classify(sample)
    if language == _NO_LANGUAGE:
        return None
    return _ISO_639_1.get(language, language)


def _check_language(language: str | None, allowed: list[str]) -> None:
    if allowed and language is not None and language not in allowed:
        raise LanguageNotAllowed(
            f"language '{language}' not in allow-list {sorted(allowed)}", stage=Stage.VALIDATE
        )


# --- entry point -----------------------------------------------------------------------------


def validate_text(text: str, metadata: dict, settings: ValidationSettings) -> ValidatedText:
    """Check cleaned text; return it (secrets redacted if so configured) with its language."""
    _check_metadata(metadata, settings.required_metadata)
    text = text.strip(" \t\n\r")  # not "\f": leading page breaks number the pages
    if not text.strip():
        raise EmptyDocument("no text after cleaning", stage=Stage.VALIDATE)
    text, redactions = handle_secrets(normal_form(text), settings.unsafe_content)
    described = _described_metadata(metadata, settings.unsafe_content, redactions)
    check_garbage(text)
    _check_length(text, settings)
    language = detect_language(text)
    _check_language(language, settings.allowed_languages)
    return ValidatedText(
        text=text, language=language, redactions=sorted(set(redactions)), metadata=described
    )
