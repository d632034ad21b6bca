"""OCR with Tesseract: text and confidence per page image, retried upright and in the page's
script when Tesseract is unsure (orientation and script detection, OSD, picks an installed
language pack, or names the missing one); text below ``ocr_min_confidence`` is dropped."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import pytesseract
from PIL import Image

from genai_ingest.config import ParseSettings
from genai_ingest.failures.errors import GarbageContent, MissingDependency, Stage

_OCR_CONFIDENT = 60.0
_ROTATE = re.compile(r"Rotate:\s*(\d+)")
_SCRIPT = re.compile(r"Script:\s*(\w+)")
# OSD script -> Tesseract language packs, any of which reads it (Debian: tesseract-ocr-<pack
# with "_" as "-">).
_SCRIPT_LANGUAGES = {
    "Arabic": ("ara",),
    "Armenian": ("hye",),
    "Bengali": ("ben",),
    "Cyrillic": ("rus",),
    "Devanagari": ("hin",),
    "Georgian": ("kat",),
    "Greek": ("ell",),
    "Gujarati": ("guj",),
    "Han": ("chi_sim", "chi_tra", "jpn"),  # Chinese characters, also Japanese kanji
    "HanS": ("chi_sim",),
    "HanT": ("chi_tra", "chi_tra_vert"),
    "Hangul": ("kor",),
    "Hebrew": ("heb",),
    "Japanese": ("jpn", "jpn_vert"),
    "Kannada": ("kan",),
    "Khmer": ("khm",),
    "Malayalam": ("mal",),
    "Tamil": ("tam",),
    "Telugu": ("tel",),
    "Thai": ("tha",),
}


@dataclass
class OcrLog:
    """What OCR noticed over a document's pages."""

    warnings: list[str] = field(default_factory=list)
    unreadable_ocr: list[float] = field(default_factory=list)  # confidences of dropped text
    missing_packs: set[str] = field(default_factory=set)  # language packs pages needed
    script_languages: set[str] = field(default_factory=set)  # OCR languages tried by script


def ocr_image(image: Image.Image, settings: ParseSettings, log: OcrLog, where: str) -> str:
    """OCR one page; if Tesseract is unsure, retry upright as orientation detection says.
    Text below ``ocr_min_confidence`` is dropped: it is noise, not the page."""
    try:
        text, confidence = _tesseract(image, settings)
        if confidence < _OCR_CONFIDENT:
            text, confidence = _upright_in_script(image, settings, log, where, text, confidence)
    except RuntimeError as exc:  # pytesseract reports its timeout as RuntimeError
        log.warnings.append(f"{where}: OCR failed: {_short(exc)}")
        return ""
    if text.strip() and confidence < settings.ocr_min_confidence:
        log.unreadable_ocr.append(confidence)
        log.warnings.append(f"{where}: OCR text dropped (confidence {confidence:.0f}%)")
        return ""
    return text


def _upright_in_script(
    image: Image.Image,
    settings: ParseSettings,
    log: OcrLog,
    where: str,
    text: str,
    confidence: float,
) -> tuple[str, float]:
    """Tesseract was unsure: retry upright and in the page's script (OSD) if that helps."""
    angle, script = orientation_and_script(image, settings.ocr_timeout_s)
    languages = languages_for(script, settings.ocr_languages)
    if pack := missing_pack(script, settings.ocr_languages):
        log.missing_packs.add(pack)
    if not angle and not languages:
        return text, confidence
    if languages:
        log.script_languages.add(languages)
    upright = image.rotate(-angle, expand=True) if angle else image
    retry_text, retry_confidence = _tesseract(upright, settings, languages)
    if retry_confidence <= confidence:
        return text, confidence
    if angle:
        log.warnings.append(f"{where} rotated by {angle} degrees for OCR")
    if languages:
        log.warnings.append(f"{where}: OCR languages '{languages}' ({script} script detected)")
    return retry_text, retry_confidence


def unreadable_ocr(log: OcrLog, settings: ParseSettings) -> GarbageContent | None:
    """Why OCR gave nothing usable, when it was low confidence: often the wrong language."""
    if not log.unreadable_ocr:
        return None
    packs = ", ".join(sorted(log.missing_packs)) or "of the document's language"
    languages = [settings.ocr_languages, *sorted(log.script_languages)]
    tried = ", ".join(f"'{language}'" for language in languages)
    return GarbageContent(
        f"OCR confidence {max(log.unreadable_ocr):.0f}% is below "
        f"{settings.ocr_min_confidence:.0f}%: unreadable with OCR languages {tried} "
        f"(install the Tesseract language pack {packs}, then replay)",
        stage=Stage.PARSE,
    )


def _tesseract(
    image: Image.Image, settings: ParseSettings, languages: str | None = None
) -> tuple[str, float]:
    """Text (lines and paragraphs kept) and mean word confidence."""
    try:
        data = pytesseract.image_to_data(
            image,
            lang=languages or settings.ocr_languages,
            timeout=settings.ocr_timeout_s,
            output_type=pytesseract.Output.DICT,
        )
    except pytesseract.TesseractNotFoundError:
        raise MissingDependency("tesseract binary not found", stage=Stage.PARSE) from None
    except pytesseract.TesseractError as exc:
        if "language" in str(exc).lower():
            raise MissingDependency(
                f"tesseract language data missing for {settings.ocr_languages!r}", stage=Stage.PARSE
            ) from None
        raise RuntimeError(str(exc)) from None
    return _ocr_text(data), _mean_confidence(data)


def _ocr_text(data: dict[str, list[Any]]) -> str:
    paragraphs: dict[tuple[int, int], dict[int, list[str]]] = {}
    for block, par, line, word in zip(
        data["block_num"], data["par_num"], data["line_num"], data["text"], strict=True
    ):
        if word.strip():
            paragraphs.setdefault((block, par), {}).setdefault(line, []).append(word)
    return "\n\n".join(
        "\n".join(" ".join(words) for words in lines.values()) for lines in paragraphs.values()
    )


def _mean_confidence(data: dict[str, list[Any]]) -> float:
    scores = [
        float(conf) for conf, word in zip(data["conf"], data["text"], strict=True) if word.strip()
    ]
    return sum(scores) / len(scores) if scores else 0.0


def orientation_and_script(image: Image.Image, timeout_s: float) -> tuple[int, str | None]:
    """Clockwise degrees that make the page upright (0 if unknown) and its script."""
    try:
        osd = pytesseract.image_to_osd(image, timeout=timeout_s)
    except (pytesseract.TesseractError, RuntimeError):
        return 0, None
    rotate, script = _ROTATE.search(osd), _SCRIPT.search(osd)
    return (int(rotate.group(1)) % 360 if rotate else 0), (script.group(1) if script else None)


def languages_for(script: str | None, configured: str) -> str | None:
    """OCR languages for a page in ``script``: an installed pack for it first, then the
    configured ones; None when the configured languages cover it or no pack is installed."""
    packs = _packs(script, configured)
    installed = [pack for pack in packs if pack in installed_languages()]
    return f"{installed[0]}+{configured}" if installed else None


def missing_pack(script: str | None, configured: str) -> str | None:
    """The language packs (any one will do) a page in ``script`` needs, none installed."""
    packs = _packs(script, configured)
    if not packs or any(pack in installed_languages() for pack in packs):
        return None
    return " or ".join(packs)


def _packs(script: str | None, configured: str) -> tuple[str, ...]:
    packs = _SCRIPT_LANGUAGES.get(script or "", ())
    return () if set(packs) & set(configured.split("+")) else packs


def can_ocr(languages: str) -> bool:
    """Whether Tesseract is installed with every language of ``languages`` ('eng+deu')."""
    return set(languages.split("+")) <= installed_languages()


@functools.cache
def installed_languages() -> frozenset[str]:
    try:
        return frozenset(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractError, pytesseract.TesseractNotFoundError, OSError):
        return frozenset()


def _short(exc: BaseException | str, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
