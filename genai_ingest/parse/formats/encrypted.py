"""Password-protected Office files (OOXML in an OLE container, Word/Excel/PowerPoint 97-2003):
detected and, with a configured password, decrypted by msoffcrypto-tool."""

from __future__ import annotations

from io import BytesIO

import msoffcrypto
from msoffcrypto.exceptions import DecryptionError, FileFormatError, InvalidKeyError

from genai_ingest.failures.errors import CorruptDocument, PasswordRequired, Stage

ENCRYPTABLE = {"doc", "xls", "ppt", "ooxml_encrypted"}


def is_encrypted(data: bytes) -> bool:
    try:
        return msoffcrypto.OfficeFile(BytesIO(data)).is_encrypted()
    except (FileFormatError, OSError, ValueError, KeyError, IndexError):
        return False


def decrypt(data: bytes, password: str | None) -> bytes:
    """The decrypted file, or ``PasswordRequired`` (none configured, or the wrong one)."""
    if not password:
        raise PasswordRequired(
            "password required (encrypted Office document in an OLE container; none "
            "configured: set parse.passwords, then replay)",
            stage=Stage.PARSE,
        )
    office = msoffcrypto.OfficeFile(BytesIO(data))
    out = BytesIO()
    try:
        office.load_key(password=password)
        office.decrypt(out)
    except (InvalidKeyError, DecryptionError) as exc:
        if "password" in str(exc).lower() or isinstance(exc, InvalidKeyError):
            raise PasswordRequired("wrong password", stage=Stage.PARSE) from None
        raise CorruptDocument(f"encrypted Office file: {exc}", stage=Stage.PARSE) from None
    except (FileFormatError, ValueError, OSError) as exc:
        raise CorruptDocument(f"encrypted Office file: {exc}", stage=Stage.PARSE) from None
    return out.getvalue()
