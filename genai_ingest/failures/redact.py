"""Keep secrets out of the index, logs, DLQ records and Prefect artifacts.

Two kinds of secrets:

* **configured** ones (passwords, API keys the process holds) are registered and masked
  wherever they appear (``redact``), together with credentials in URLs and auth headers;
* **document** secrets (cloud keys, tokens, private keys, passwords) are found by pattern
  (``find_secrets``, ``redact_secrets``) in every document's text and metadata, and in DLQ
  reasons and stack traces. Patterns run on the *normal form* every format shares
  (``normal_form``: docling's Markdown escapes undone), and credentials are also found by
  *shape*: an AWS secret key is any 40-character key-like token near an access key id (a CSV
  or table row without labels), also when a PDF's line breaks cut it into pieces, and a table
  column headed "password", "secret", "token" or "api key" has its cells masked.

A pattern set, not a detector library: detect-secrets (the maintained one) scans line by line
with a plugin per kind and had no rule for unlabelled key pairs; these patterns run in one
regex pass per kind over the text and are tested in ``tests/test_validate.py`` and
``tests/test_hostile.py``.
"""

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
    """``text`` with registered secrets, URL credentials, auth headers and document secrets
    (``redact_secrets``) masked: for log lines, DLQ reasons and stack traces."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return redact_secrets(normal_form(text))[0]


# --- document secrets ----------------------------------------------------------------------

_MARKDOWN_ESCAPE = re.compile(r"\\([_*])")


def normal_form(text: str) -> str:
    """Text as every format yields it: docling's Markdown escapes (``\\_``, ``\\*``) undone."""
    return _MARKDOWN_ESCAPE.sub(r"\1", text)


_AWS_KEY_ID = r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"
# (kind, pattern): the secret is group "s" where the pattern also matches a label to keep.
SECRET_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("gcp_service_account_key", re.compile(r'"private_key"\s*:\s*"(?P<s>(?:[^"\\]|\\.)+)"')),
    (
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r".*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
            re.DOTALL,
        ),
    ),
    ("aws_access_key", re.compile(_AWS_KEY_ID)),
    (
        "azure_storage_key",
        re.compile(r"(?i:AccountKey|SharedAccessKey)\s*=\s*(?P<s>[A-Za-z0-9+/]{30,}={0,2})"),
    ),
    ("azure_sas_token", re.compile(r"[?&]sig=(?P<s>[A-Za-z0-9%+/=]{30,})")),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{22,255})")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    (
        "slack_webhook",
        re.compile(r"https://hooks\.slack\.com/services/T\w+/B\w+/\w+"),
    ),
    (
        "password",
        re.compile(
            r"(?<![A-Za-z])(?i:password|passwd|pwd)\s*=\s*([\"']?)(?P<s>\w[^\s\"'&;<>]{3,})\1"
        ),
    ),
]

# Lower-case literals one of which a match must contain: a pattern runs only where one
# occurs, so text without any costs a few substring scans instead of a regex pass per kind.
_HINTS: dict[str, tuple[str, ...]] = {
    "gcp_service_account_key": ('"private_key"',),
    "private_key": ("private key",),
    "aws_access_key": ("akia", "asia", "abia", "acca"),
    "azure_storage_key": ("accountkey", "sharedaccesskey"),
    "azure_sas_token": ("sig=",),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "slack_token": ("xox",),
    "slack_webhook": ("hooks.slack.com",),
    "password": ("password", "passwd", "pwd"),
}

# An AWS secret key: 40 key characters after a label, or key-like in the row of an access key
# id (or the row before or the two after it: PDF text can break a table row). A
# line break may cut the key (at most twice, one piece at least _MIN_KEY_PIECE long): the text
# then shows it as pieces separated by whitespace.
_AWS_SECRET_LABEL = re.compile(
    r"(?i:aws_?secret(?:_?access)?_?key|secretaccesskey)[\"']?\s*[:=]\s*[\"']?"
)
_KEY_ID = re.compile(_AWS_KEY_ID)
_KEY_RUN = re.compile(r"[A-Za-z0-9/+]+")
_KEY_LENGTH = 40
_MAX_KEY_PIECES = 3
_MIN_KEY_PIECE = 14
_ROWS_AFTER_KEY_ID = 2

# A Markdown table: header row, separator row, body rows.
_TABLE = re.compile(r"^(\|[^\n]*\|)\n(\|[ :|-]*-[ :|-]*\|)\n((?:\|[^\n]*\|(?:\n|\Z))+)", re.M)
_SECRET_HEADER = re.compile(
    r"(?i)\b(?:passw(?:or)?d|passphrase|secret|token|api[ _-]?key|private[ _-]?key)s?\b"
)
_NOT_SECRET_HEADER = re.compile(r"(?i)\b(?:id|name|user(?:name)?|hint|expir\w*|date)\b")
_EMPTY_CELL = re.compile(r"\s*(?:-+|n/?a|none)?\s*", re.I)


_MAX_SCANNED_BYTES = 10 * 1024 * 1024
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def keepable_bytes(data: bytes) -> bytes | None:
    """``data`` if the DLQ may keep it, else None (the entry then points at its source): text
    that shows a secret, or text too large to scan (over 10 MB), is not kept. Binary formats
    (PDF, Office zips, images) are kept: their text is compressed, a scan would not see it."""
    utf16 = data[:2] in _UTF16_BOMS
    if b"\x00" in data[:8192] and not utf16:
        return data
    if len(data) > _MAX_SCANNED_BYTES:
        return None
    text = data.decode("utf-16" if utf16 else "utf-8", errors="replace")
    return None if find_secrets(normal_form(text)) else data


def find_secrets(text: str) -> list[str]:
    """Kinds of secrets in ``text`` (sorted, unique)."""
    return redact_secrets(text)[1]


def redact_secrets(text: str) -> tuple[str, list[str]]:
    """Replace every secret by ``[REDACTED:kind]``; return the text and the kinds found."""
    kinds: set[str] = set()
    lowered = text.lower()
    if "secret" in lowered or any(hint in lowered for hint in _HINTS["aws_access_key"]):
        text, count = _redact_spans(text, _aws_secret_spans(text), "aws_secret_key")
        if count:
            kinds.add("aws_secret_key")
    for kind, pattern in SECRET_PATTERNS:
        if not any(hint in lowered for hint in _HINTS[kind]):
            continue
        text, count = pattern.subn(lambda m, k=kind: _redacted(m, k), text)
        if count:
            kinds.add(kind)
    if "|" in text:
        text = _TABLE.sub(_redact_secret_columns, text)
    if "[REDACTED:table_secret]" in text:
        kinds.add("table_secret")
    return text, sorted(kinds)


def _redacted(match: re.Match[str], kind: str) -> str:
    """The match with its secret part (group "s", else all of it) replaced by a marker."""
    marker = f"[REDACTED:{kind}]"
    if "s" not in match.re.groupindex:
        return marker
    start, end = match.span("s")
    offset = match.start()
    whole = match.group()
    return whole[: start - offset] + marker + whole[end - offset :]


def _aws_secret_spans(text: str) -> list[tuple[int, int]]:
    """Where AWS secret keys are: after a label, and key-like in the rows of an access key id."""
    spans = []
    for label in _AWS_SECRET_LABEL.finditer(text):
        spans += _key_spans(text, label.end(), label.end() + 2 * _KEY_LENGTH, labelled=True)
    for match in _KEY_ID.finditer(text):
        row = text.rfind("\n", 0, match.start()) + 1
        start = text[:row].rstrip("\n").rfind("\n") + 1  # the row before: a key cut there
        end = match.end()
        for _ in range(_ROWS_AFTER_KEY_ID + 1):
            newline = text.find("\n", end)
            end = len(text) if newline < 0 else newline + 1
            while text[end : end + 1] == "\n":  # a blank line is no row
                end += 1
        spans += _key_spans(text, start, end, labelled=False)
    return spans


def _key_spans(text: str, start: int, end: int, *, labelled: bool) -> list[tuple[int, int]]:
    """Spans of 40-character keys in ``text[start:end]``, whole or cut by line breaks; a
    labelled key starts right at ``start`` and need not look random."""
    runs = list(_KEY_RUN.finditer(text, start, end))
    if labelled:
        runs = runs[:_MAX_KEY_PIECES] if runs and runs[0].start() == start else []
    spans = []
    i = 0
    while i < len(runs):
        last = _key_end(text, runs[i:], labelled)
        if last is not None:
            spans.append((runs[i].start(), runs[i + last].end()))
            i += last + 1
        elif labelled:
            break
        else:
            i += 1
    return spans


def _key_end(text: str, runs: list[re.Match[str]], labelled: bool) -> int | None:
    """How many runs after the first one make a key with it, if any."""
    pieces: list[str] = []
    for n, run in enumerate(runs[:_MAX_KEY_PIECES]):
        if _KEY_ID.fullmatch(run.group()) or (
            n and not text[runs[n - 1].end() : run.start()].isspace()
        ):
            return None  # an access key id is no part of a secret one
        pieces.append(run.group())
        key = "".join(pieces)
        if len(key) > _KEY_LENGTH:
            return None
        if len(key) == _KEY_LENGTH and text[run.end() : run.end() + 1] != "=":
            whole = n == 0
            cut = max(map(len, pieces)) >= _MIN_KEY_PIECE
            return n if (whole or cut) and ((labelled and whole) or _key_like(key)) else None
    return None


def _redact_spans(text: str, spans: list[tuple[int, int]], kind: str) -> tuple[str, int]:
    """``text`` with each span replaced by a marker of ``kind``; and how many spans."""
    spans = sorted(set(spans))
    parts, done = [], 0
    for start, end in spans:
        if start >= done:
            parts += [text[done:start], f"[REDACTED:{kind}]"]
            done = end
    return "".join([*parts, text[done:]]), len(spans)


def _key_like(token: str) -> bool:
    """Random key material mixes cases and digits or symbols; a long word or path does not."""
    return (
        any(c.islower() for c in token)
        and any(c.isupper() for c in token)
        and any(c.isdigit() or c in "/+" for c in token)
    )


def _cells(row: str) -> list[str]:
    return row.strip().strip("|").split("|")


def _redact_secret_columns(match: re.Match[str]) -> str:
    """Mask the cells under a header that names a secret (password, token, api key...)."""
    header, separator, body = match.groups()
    secret_columns = {
        i
        for i, cell in enumerate(_cells(header))
        if _SECRET_HEADER.search(cell) and not _NOT_SECRET_HEADER.search(cell)
    }
    if not secret_columns:
        return match.group()
    rows = []
    for row in body.rstrip("\n").split("\n"):
        cells = _cells(row)
        for i in secret_columns & set(range(len(cells))):
            if not _EMPTY_CELL.fullmatch(cells[i]) and "[REDACTED:" not in cells[i]:
                cells[i] = " [REDACTED:table_secret] "
        rows.append("|" + "|".join(cells) + "|")
    tail = "\n" if body.endswith("\n") else ""
    return f"{header}\n{separator}\n" + "\n".join(rows) + tail
