"""OPML outlines as HTML: the outline's title a heading, its nested entries nested lists."""

from __future__ import annotations

from html import escape

from genai_ingest.failures.errors import CorruptDocument, Stage


def opml_to_html(data: bytes) -> bytes:
    """Each ``<outline text=...>`` becomes a list item (its ``title`` attribute if it has no
    text), nested as in the outline; the ``head``'s title becomes the heading."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise CorruptDocument(f"OPML outline is malformed: {exc}", stage=Stage.PARSE) from None
    title = root.findtext("head/title") or ""
    body = root.find("body")
    items = _items(body) if body is not None else ""
    heading = f"<h1>{escape(title.strip())}</h1>" if title.strip() else ""
    return f"<html><body>{heading}{items}</body></html>".encode()


def _items(parent: object) -> str:
    entries = []
    for outline in parent.findall("outline"):  # type: ignore[attr-defined]
        text = (outline.get("text") or outline.get("title") or "").strip()
        nested = _items(outline)
        if text or nested:
            entries.append(f"<li>{escape(text)}{nested}</li>")
    return f"<ul>{''.join(entries)}</ul>" if entries else ""
