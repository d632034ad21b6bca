"""E-books: EPUB made readable for docling, FictionBook (FB2) mapped to HTML."""

from __future__ import annotations

import zipfile
from io import BytesIO

from genai_ingest.failures.errors import CorruptDocument, Stage

# FictionBook element -> HTML element; a "title" becomes a heading of its section's depth,
# anything else a "div".
_FB2_TAGS = {
    "p": "p",
    "v": "p",
    "subtitle": "h6",
    "text-author": "p",
    "emphasis": "em",
    "strong": "strong",
    "strikethrough": "s",
    "sub": "sub",
    "sup": "sup",
    "code": "code",
    "style": "span",
    "a": "a",
    "table": "table",
    "tr": "tr",
    "td": "td",
    "th": "th",
    "cite": "blockquote",
    "epigraph": "blockquote",
    "annotation": "blockquote",
    "book-title": "h1",
}
_HTML_KEPT = {*_FB2_TAGS.values(), "body", "span", "h1", "h2", "h3", "h4", "h5", "h6"}
# Embedded images (base64), CSS and the publishing metadata block are not document text.
_FB2_DROPPED = ("binary", "image", "stylesheet", "description")


def epub_for_docling(data: bytes) -> bytes:
    """The EPUB with its ``mimetype`` member first, as the EPUB standard asks: docling (via
    ``filetype``) only recognises an EPUB by that first member."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as source:
            names = source.namelist()
            if names and names[0] == "mimetype":
                return data
            out = BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
                target.writestr(
                    zipfile.ZipInfo("mimetype"), b"application/epub+zip", zipfile.ZIP_STORED
                )
                for name in names:
                    if name != "mimetype":
                        target.writestr(name, source.read(name))
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise CorruptDocument(f"epub container unreadable: {exc}", stage=Stage.PARSE) from None
    return out.getvalue()


def fb2_to_html(data: bytes) -> bytes:
    """FictionBook XML as HTML: sections and titles become headings, paragraphs stay
    paragraphs; embedded images, CSS and the metadata block are dropped."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise CorruptDocument(f"FictionBook XML is malformed: {exc}", stage=Stage.PARSE) from None
    for element in list(root.iter()):
        if isinstance(element.tag, str):
            element.tag = etree.QName(element).localname
        elif element.getparent() is not None:  # comments, processing instructions
            element.getparent().remove(element)
    for name in _FB2_DROPPED:
        for element in root.findall(f".//{name}"):
            element.getparent().remove(element)
    for title in root.findall(".//title"):  # before sections lose their names
        depth = sum(1 for parent in title.iterancestors() if parent.tag == "section")
        title.tag = f"h{min(depth + 1, 6)}"
        for line in title.findall("p"):
            line.tag = "span"
            line.tail = " " + (line.tail or "")
    for element in root.iter():
        element.tag = _FB2_TAGS.get(element.tag, element.tag)
        if element.tag not in _HTML_KEPT:
            element.tag = "div"
        element.attrib.clear()
    root.tag = "html"
    etree.cleanup_namespaces(root)
    # A BOM tells docling the encoding, as the XML declaration did.
    return b"\xef\xbb\xbf" + etree.tostring(root, method="html", encoding="utf-8")
