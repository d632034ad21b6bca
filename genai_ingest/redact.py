"""Keep secrets out of logs, DLQ records and Prefect artifacts.

Two nets: every secret value the process is configured with (passwords, API keys) is
registered and masked wherever it appears; credentials embedded in URLs are masked by pattern."""

from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.I)
_AUTH_HEADER = re.compile(
    r"(?i)(authorization|api[-_]?key|x-api-key)(['\"]?\s*[:=]\s*['\"]?)"
    r"(?:(?:bearer|basic|apikey)\s+)?[^\s'\",}]+"
)
MASK = "***"


def register_secret(value: str | None) -> None:
    """Remember a secret so ``redact`` masks it from now on."""
    if value and len(value) >= 3:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with registered secrets, URL credentials and auth headers masked."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
