"""Sources: list documents (local files, folders, HTTP(S) URLs, S3 prefixes) and fetch bytes.

A source spec is a path, ``file://…``, ``http(s)://…`` or ``s3://bucket/prefix``. URL options ride
in the fragment: ``https://host/a.pdf#sha256=<hex>&mirror=https://mirror/a.pdf``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import parse_qs, urldefrag, urlparse

import httpx

from genai_ingest.config import SourceSettings
from genai_ingest.errors import (
    ChecksumMismatch,
    DocumentTooLarge,
    FetchFailed,
    PermanentError,
    RateLimited,
    SourceNotFound,
    Stage,
    TransientError,
)
from genai_ingest.models import RawDocument, SourceRef, sha256_hex
from genai_ingest.policies import RetryPolicy

#: Fetchers for other schemes (``s3`` registers itself): (ref, settings) -> bytes.
EXTRA_FETCHERS: dict[str, Callable[[SourceRef, SourceSettings], bytes]] = {}
#: Listers for other schemes: (spec, settings) -> refs.
EXTRA_LISTERS: dict[str, Callable[[str, SourceSettings], Iterator[SourceRef]]] = {}


def discover(specs: Sequence[str], settings: SourceSettings) -> list[SourceRef]:
    """All documents under ``specs``, de-duplicated and sorted by URI (a stable order makes
    runs reproducible). Raises ``SourceNotFound`` for a path that does not exist."""
    refs: dict[str, SourceRef] = {}
    for spec in specs:
        for ref in _list_spec(spec, settings):
            refs.setdefault(ref.uri, ref)
    return [refs[uri] for uri in sorted(refs)]


def source_roots(specs: Sequence[str]) -> list[str]:
    """URI prefixes covered by ``specs`` (for ``--delete-missing``)."""
    roots = []
    for spec in specs:
        scheme = _scheme(spec)
        if scheme in ("http", "https"):
            roots.append(urldefrag(spec).url)
        elif scheme == "file" or scheme == "":
            path = _local_path(spec).resolve()
            roots.append(path.as_uri() + ("/" if path.is_dir() else ""))
        else:
            roots.append(spec)
    return roots


def _scheme(spec: str) -> str:
    return urlparse(spec).scheme.lower() if "://" in spec else ""


def _local_path(spec: str) -> Path:
    return Path(urlparse(spec).path) if spec.startswith("file://") else Path(spec).expanduser()


def _list_spec(spec: str, settings: SourceSettings) -> Iterator[SourceRef]:
    scheme = _scheme(spec)
    if scheme in ("http", "https"):
        yield _url_ref(spec)
    elif scheme in ("", "file"):
        yield from _list_local(_local_path(spec), settings)
    elif scheme in EXTRA_LISTERS:
        yield from EXTRA_LISTERS[scheme](spec, settings)
    else:
        raise SourceNotFound(f"unsupported source scheme {scheme!r} in {spec}", stage=Stage.FETCH)


def _url_ref(spec: str) -> SourceRef:
    url, fragment = urldefrag(spec)
    options = parse_qs(fragment)
    name = Path(urlparse(url).path).name or urlparse(url).netloc
    return SourceRef(
        uri=url,
        name=name,
        expected_sha256=(options.get("sha256") or [None])[0],
        mirrors=tuple(options.get("mirror", [])),
    )


def _list_local(path: Path, settings: SourceSettings) -> Iterator[SourceRef]:
    path = path.resolve()
    if path.is_file():
        yield _file_ref(path)
        return
    if not path.is_dir():
        raise SourceNotFound(f"no such file or folder: {path}", stage=Stage.FETCH)
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path).as_posix()
        if _matches(relative, settings.include) and not _matches(relative, settings.exclude):
            yield _file_ref(file)


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    return any(
        fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(relative, p.removeprefix("**/"))
        for p in patterns
    )


def _file_ref(path: Path) -> SourceRef:
    return SourceRef(uri=path.as_uri(), name=path.name, size=path.stat().st_size)


def fetch(ref: SourceRef, settings: SourceSettings, policy: RetryPolicy) -> RawDocument:
    """The document's bytes. Size limit and checksum enforced; transient HTTP errors retried
    with ``policy``; mirrors tried in turn when the primary fails."""
    scheme = ref.source_type
    if scheme == "file":
        data = _read_file(ref, settings)
    elif scheme in ("http", "https"):
        data = _download_with_mirrors(ref, settings, policy)
    elif scheme in EXTRA_FETCHERS:
        data = policy.retrying()(EXTRA_FETCHERS[scheme], ref, settings)
    else:
        raise SourceNotFound(f"unsupported source {ref.uri}", stage=Stage.FETCH)
    return RawDocument(ref=ref, data=data)


def _read_file(ref: SourceRef, settings: SourceSettings) -> bytes:
    path = Path(urlparse(ref.uri).path)
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise SourceNotFound(f"file disappeared: {path}", stage=Stage.FETCH) from exc
    _check_size(size, settings.max_file_bytes)
    return path.read_bytes()


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise DocumentTooLarge(
            f"{size} bytes exceeds the {limit}-byte limit (sources.max_file_bytes)",
            stage=Stage.FETCH,
        )


def _download_with_mirrors(ref: SourceRef, settings: SourceSettings, policy: RetryPolicy) -> bytes:
    errors: list[str] = []
    last: Exception | None = None
    for url in (ref.uri, *ref.mirrors):
        try:
            data = policy.retrying()(_download, url, settings)
            if ref.expected_sha256 and sha256_hex(data) != ref.expected_sha256.lower():
                raise ChecksumMismatch(
                    f"sha256 of {url} is {sha256_hex(data)}, expected {ref.expected_sha256}",
                    stage=Stage.FETCH,
                )
            return data
        except (PermanentError, TransientError) as exc:
            errors.append(f"{url}: {exc.reason}")
            last = exc
    assert last is not None
    if isinstance(last, TransientError):
        raise FetchFailed("; ".join(errors), stage=Stage.FETCH) from last
    raise type(last)("; ".join(errors), stage=Stage.FETCH) from last


def _download(url: str, settings: SourceSettings) -> bytes:
    """One GET, streamed, aborted past the size limit."""
    limit = settings.max_file_bytes
    try:
        with (
            httpx.Client(timeout=settings.download_timeout_s, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            _raise_for_status(response, url)
            declared = int(response.headers.get("content-length") or 0)
            _check_size(declared, limit)
            body = bytearray()
            for part in response.iter_bytes():
                body += part
                _check_size(len(body), limit)
            return bytes(body)
    except httpx.TransportError as exc:
        raise FetchFailed(f"{type(exc).__name__} fetching {url}", stage=Stage.FETCH) from exc


def _raise_for_status(response: httpx.Response, url: str) -> None:
    status = response.status_code
    if status < 400:
        return
    if status == 429:
        retry_after = response.headers.get("retry-after")
        raise RateLimited(
            f"HTTP 429 from {url}",
            stage=Stage.FETCH,
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )
    if status in (408, 425) or status >= 500:
        raise FetchFailed(f"HTTP {status} from {url}", stage=Stage.FETCH)
    raise SourceNotFound(f"HTTP {status} from {url}", stage=Stage.FETCH)
