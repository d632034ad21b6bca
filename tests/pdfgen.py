"""Small PDFs generated for tests: lines of text in a standard font, one list per page."""

from __future__ import annotations

import io
import zlib

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


def drawn_pages_pdf(text_page: list[str], blank: int, white: int, barred: int = 0) -> bytes:
    """``text_page``, then ``blank`` pages with nothing on them, ``white`` pages that paint a
    white rectangle (drawn, nothing to see) and ``barred`` pages of black bars (no text layer:
    each goes to OCR)."""
    pdf = pikepdf.Pdf.open(io.BytesIO(text_pdf([text_page, *[[]] * blank])))
    white_fill = pdf.make_stream(b"1 1 1 rg 36 36 540 720 re f")
    bars = pdf.make_stream(
        b"0 g " + b" ".join(b"72 %d 468 18 re" % y for y in range(100, 700, 40)) + b" f"
    )
    for contents in [white_fill] * white + [bars] * barred:
        pdf.add_blank_page(page_size=(612, 792)).Contents = contents
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def flate_bomb_pdf(lines: list[str], decoded_mb: int) -> bytes:
    """A page showing ``lines``, whose content stream then repeats a no-op (``q Q``) until it
    inflates to ``decoded_mb`` MB: a FlateDecode bomb of about 1/1000 of that size."""
    head = text_pdf([lines])
    pdf = pikepdf.Pdf.open(io.BytesIO(head))
    page = pdf.pages[0]
    text = page.Contents.read_bytes()
    packer = zlib.compressobj(9)
    compressed = [packer.compress(text + b"\n")]
    block = b"q Q\n" * (1 << 18)  # 1 MB
    compressed += [packer.compress(block) for _ in range(decoded_mb)]
    compressed.append(packer.flush())
    page.Contents.write(b"".join(compressed), filter=pikepdf.Name.FlateDecode)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()
