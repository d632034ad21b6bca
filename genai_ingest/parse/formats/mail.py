"""Outlook ``.msg`` to a standard e-mail (extract-msg), which docling then reads like ``.eml``."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from genai_ingest.failures.errors import CorruptDocument, Stage

_INTERNET_CODEPAGE = "3FDE0003"  # PidTagInternetCodepage
_MESSAGE_CODEPAGE = "3FFD0003"  # PidTagMessageCodepage


def msg_to_eml(data: bytes) -> bytes:
    """The message's headers and bodies (plain and HTML) as RFC 822 bytes."""
    try:
        message = _open(data)
        try:
            return _as_email(message).as_bytes()
        finally:
            message.close()
    except Exception as exc:  # extract-msg raises many types for damaged files
        raise CorruptDocument(
            f"Outlook message cannot be read: {type(exc).__name__}: {exc}"[:300], stage=Stage.PARSE
        ) from None


def _open(data: bytes) -> Any:
    """Open the message; 8-bit strings are decoded with the code page the message declares
    (extract-msg otherwise guesses a Latin one and garbles e.g. Big5 Chinese)."""
    import extract_msg  # 2 s to import: only where a .msg is parsed

    message = extract_msg.openMsg(data)
    if message.areStringsUnicode:
        return message
    codepage = message.getPropertyVal(_INTERNET_CODEPAGE) or message.getPropertyVal(
        _MESSAGE_CODEPAGE
    )
    if not codepage:
        return message
    try:
        encoding = extract_msg.encoding.lookupCodePage(codepage)
    except (
        extract_msg.exceptions.UnknownCodepageError,
        extract_msg.exceptions.UnsupportedEncodingError,
    ):
        return message
    message.close()
    return extract_msg.openMsg(data, overrideEncoding=encoding)


def _as_email(message: Any) -> EmailMessage:
    email = EmailMessage()
    for header, value in (
        ("Subject", message.subject),
        ("From", message.sender),
        ("To", message.to),
        ("Cc", message.cc),
    ):
        if value:
            email[header] = " ".join(str(value).split())
    if message.date:
        email["Date"] = format_datetime(message.date)
    email.set_content(message.body or "")
    html = _html_body(message)
    if html:
        email.add_alternative(html, subtype="html")
    return email


def _html_body(message: Any) -> str | None:
    try:
        html = message.htmlBody
    except Exception:  # an HTML body de-encapsulated from broken RTF: the text body remains
        return None
    return html.decode("utf-8", errors="replace") if isinstance(html, bytes) else html
