"""Tesseract orientation and script detection (OSD): which way is up, and which installed
language pack reads the page's script when the configured OCR languages do not."""

from __future__ import annotations

import functools
import re

import pytesseract
from PIL import Image

_ROTATE = re.compile(r"Rotate:\s*(\d+)")
_SCRIPT = re.compile(r"Script:\s*(\w+)")
# OSD script -> Tesseract language pack (Debian: tesseract-ocr-<pack with _ as ->).
_SCRIPT_LANGUAGES = {
    "Arabic": "ara",
    "Armenian": "hye",
    "Bengali": "ben",
    "Cyrillic": "rus",
    "Devanagari": "hin",
    "Georgian": "kat",
    "Greek": "ell",
    "Gujarati": "guj",
    "Han": "chi_sim",
    "HanS": "chi_sim",
    "HanT": "chi_tra",
    "Hangul": "kor",
    "Hebrew": "heb",
    "Japanese": "jpn",
    "Kannada": "kan",
    "Khmer": "khm",
    "Malayalam": "mal",
    "Tamil": "tam",
    "Telugu": "tel",
    "Thai": "tha",
}


def orientation_and_script(image: Image.Image, timeout_s: float) -> tuple[int, str | None]:
    """Clockwise degrees that make the page upright (0 if unknown) and its script."""
    try:
        osd = pytesseract.image_to_osd(image, timeout=timeout_s)
    except (pytesseract.TesseractError, RuntimeError):
        return 0, None
    rotate, script = _ROTATE.search(osd), _SCRIPT.search(osd)
    return (int(rotate.group(1)) % 360 if rotate else 0), (script.group(1) if script else None)


def languages_for(script: str | None, configured: str) -> str | None:
    """OCR languages for a page in ``script``: its installed pack first, then the configured
    ones; None when the configured languages already cover it or no pack is installed."""
    pack = _SCRIPT_LANGUAGES.get(script or "")
    if pack is None or pack in configured.split("+") or pack not in installed_languages():
        return None
    return f"{pack}+{configured}"


def missing_pack(script: str | None, configured: str) -> str | None:
    """The language pack a page in ``script`` needs but that is not installed."""
    pack = _SCRIPT_LANGUAGES.get(script or "")
    if pack is None or pack in configured.split("+") or pack in installed_languages():
        return None
    return pack


@functools.cache
def installed_languages() -> frozenset[str]:
    try:
        return frozenset(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractError, pytesseract.TesseractNotFoundError, OSError):
        return frozenset()
