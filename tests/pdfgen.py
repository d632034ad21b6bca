"""Small PDFs generated for tests: lines of text in a standard font, one list per page."""

from __future__ import annotations

import io

import pikepdf


def text_pdf(pages: list[list[str]], *, size: float = 11) -> bytes:
    """A PDF whose pages show the given lines in Helvetica, top to bottom (blank page if [])."""
    pdf = pikepdf.Pdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font,
            Subtype=pikepdf.Name.Type1,
            BaseFont=pikepdf.Name.Helvetica,
            Encoding=pikepdf.Name.WinAnsiEncoding,
        )
    )
    for lines in pages:
        ops = [f"BT /F1 {size:g} Tf {1.3 * size:g} TL 72 720 Td"]
        ops += [f"({_escaped(line)}) Tj T*" for line in lines]
        ops.append("ET")
        page = pdf.add_blank_page(page_size=(612, 792))
        page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
        page.Contents = pdf.make_stream("\n".join(ops).encode("cp1252"))
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def _escaped(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
