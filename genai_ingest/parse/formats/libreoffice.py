"""Convert office formats docling cannot read (legacy Word/Excel/PowerPoint, RTF, Write,
WordPerfect, Works, Strict OOXML workbooks) with LibreOffice headless.

docling's own converter runs ``soffice`` hardened (macros off, links not updated, a throwaway
``-env:UserInstallation`` profile per conversion, the whole process group killed on timeout);
this module gives it a timeout and turns its failures into classified errors.
"""

from __future__ import annotations

import subprocess
from io import BytesIO

from genai_ingest.failures.errors import CorruptDocument, DeadlineExceeded, MissingDependency, Stage


def convert(data: bytes, source_suffix: str, target_suffix: str, timeout_s: float) -> bytes:
    """``data`` (a ``.source_suffix`` file) converted to ``target_suffix``, or a classified
    error: LibreOffice missing (``missing_dependency``), too slow (``timeout``), or unable
    to read the file (``corrupt``)."""
    from docling.backend.docx.drawingml.utils import convert_to_modern_format, get_libreoffice_cmd

    if get_libreoffice_cmd() is None:
        raise MissingDependency(
            f"LibreOffice (soffice) not found: it is needed to read .{source_suffix} files "
            "(apt-get install libreoffice-writer libreoffice-calc libreoffice-impress), "
            "then replay",
            stage=Stage.PARSE,
        )
    try:
        converted = convert_to_modern_format(  # subprocess takes a float: no rounding up
            BytesIO(data), source_suffix, target_suffix, timeout_s=max(0.01, timeout_s)
        )
    except subprocess.TimeoutExpired:
        raise DeadlineExceeded(
            f"LibreOffice conversion of .{source_suffix} timed out after {timeout_s:g}s "
            "(parse.convert_timeout_s, at most 80% of the document's parse deadline: raise "
            "them, then replay)",
            stage=Stage.PARSE,
        ) from None
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        raise CorruptDocument(
            f".{source_suffix} cannot be read by LibreOffice (damaged or password-protected?): "
            f"{type(exc).__name__}",
            stage=Stage.PARSE,
        ) from None
    return converted.getvalue()


def keep_docling_from_rendering_shapes() -> None:
    """docling renders each DrawingML shape of a DOCX to an image through LibreOffice when it
    is installed (a minute for ``docling_textbox.docx`` instead of 7 s). The pipeline drops
    images and docling reads the shapes' text without it, so it is told there is no renderer."""
    from docling.backend import msword_backend

    msword_backend.get_docx_to_pdf_converter = lambda: None
