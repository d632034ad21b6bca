"""Sources: list documents (local files, folders, HTTP(S) URLs, S3 prefixes) and fetch bytes.

A source spec is a path, ``file://…``, ``http(s)://…`` or ``s3://bucket/prefix``. URL options ride
in the fragment: ``https://host/a.pdf#sha256=<hex>&mirror=https://mirror/a.pdf``.

A source folder is a boundary. Symbolic links are not followed (``sources.follow_symlinks``
follows those that stay inside the folder; none leading out of it); FIFOs, sockets, devices,
link loops and entries that cannot be listed (permission denied, a path longer than the
system allows) are listed as *skipped* with their reason, and fetching one fails that entry
alone (``skipped_source`` in the DLQ). A ``file://`` URI is the path's bytes percent-encoded,
decoded exactly once when read (spaces, ``%20`` in a name, newlines, invalid UTF-8 all
round-trip). Files are opened without following a final link and without blocking, checked to
be regular files, and read no further than ``sources.max_file_bytes``.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import parse_qs, quote_from_bytes, unquote_to_bytes, urldefrag, urlparse, urlsplit

from genai_ingest.config import SourceSettings
from genai_ingest.failures.errors import (
    ChecksumMismatch,
    DeadlineExceeded,
    FetchFailed,
    PermanentError,
    SkippedSource,
    SourceNotFound,
    Stage,
    TransientError,
)
from genai_ingest.failures.policies import RetryPolicy
from genai_ingest.models import RawDocument, SourceRef, sha256_hex
from genai_ingest.sources.download import check_size, download

#: Fetchers for other schemes (``s3`` registers itself): (ref, settings) -> bytes.
EXTRA_FETCHERS: dict[str, Callable[[SourceRef, SourceSettings], bytes]] = {}
#: Listers for other schemes: (spec, settings) -> refs.
EXTRA_LISTERS: dict[str, Callable[[str, SourceSettings], Iterator[SourceRef]]] = {}
_READ_BLOCK = 1 << 20


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
            roots.append(path_to_uri(str(path)) + ("/" if path.is_dir() else ""))
        else:
            roots.append(spec)
    return roots


def path_to_uri(path: str) -> str:
    """``file://`` URI of an absolute path: its bytes, percent-encoded (as ``Path.as_uri``)."""
    return "file://" + quote_from_bytes(os.fsencode(path))


def uri_to_path(uri: str) -> str:
    """The path a ``file://`` URI names, decoded exactly once (bytes that are not UTF-8 come
    back as the same bytes)."""
    return os.fsdecode(unquote_to_bytes(urlsplit(uri).path))


def _scheme(spec: str) -> str:
    return urlparse(spec).scheme.lower() if "://" in spec else ""


def _local_path(spec: str) -> Path:
    return Path(uri_to_path(spec)) if spec.startswith("file://") else Path(spec).expanduser()


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


# --- local folders -------------------------------------------------------------------------


def _list_local(path: Path, settings: SourceSettings) -> Iterator[SourceRef]:
    """The documents of a file or folder given by the user (a link given directly is taken)."""
    try:
        path = path.resolve(strict=True)
        mode = path.stat().st_mode
    except (OSError, RuntimeError) as exc:
        raise SourceNotFound(f"no such file or folder: {path} ({exc})", stage=Stage.FETCH) from None
    if stat.S_ISDIR(mode):
        yield from _walk(str(path), str(path), settings, {str(path)})
    else:
        yield _entry_ref(str(path), str(path.parent), mode, size=path.stat().st_size)


def _walk(
    root: str, folder: str, settings: SourceSettings, visited: set[str]
) -> Iterator[SourceRef]:
    """Entries under ``folder`` in name order; never raises for one bad entry."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        if folder == root:
            raise SourceNotFound(
                f"cannot list {folder}: {exc.strerror}", stage=Stage.FETCH
            ) from None
        yield _skipped(folder, root, f"folder cannot be listed: {_os_reason(exc)}")
        return
    for entry in entries:
        relative = os.path.relpath(entry.path, root)
        if _matches(relative + "/", settings.exclude):
            continue
        try:
            yield from _visit(root, entry, relative, settings, visited)
        except OSError as exc:
            if _wanted(relative, settings):
                yield _skipped(entry.path, root, f"cannot be listed: {_os_reason(exc)}")


def _visit(
    root: str, entry: os.DirEntry[str], relative: str, settings: SourceSettings, visited: set[str]
) -> Iterator[SourceRef]:
    info = entry.stat(follow_symlinks=False)
    if stat.S_ISDIR(info.st_mode):
        yield from _walk(root, entry.path, settings, visited)
        return
    if not _wanted(relative, settings):
        return
    if stat.S_ISLNK(info.st_mode):
        yield from _visit_link(root, entry.path, settings, visited)
        return
    yield _entry_ref(entry.path, root, info.st_mode, size=info.st_size)


def _visit_link(
    root: str, link: str, settings: SourceSettings, visited: set[str]
) -> Iterator[SourceRef]:
    """A symbolic link: followed only if allowed and its target stays inside ``root``."""
    if not settings.follow_symlinks:
        yield _skipped(
            link,
            root,
            "symbolic link not followed (sources.follow_symlinks follows links "
            "that stay inside the source folder)",
        )
        return
    try:
        target = os.path.realpath(link, strict=True)
        info = os.stat(target)
    except OSError as exc:
        reason = "symbolic link loop" if exc.errno == errno.ELOOP else _os_reason(exc)
        yield _skipped(link, root, f"broken symbolic link: {reason}")
        return
    if not _inside(target, root):
        yield _skipped(link, root, "symbolic link leads out of the source folder: not followed")
    elif stat.S_ISDIR(info.st_mode):
        if target in visited:
            yield _skipped(link, root, "symbolic link loop: folder already listed")
            return
        visited.add(target)
        for ref in _walk(root, target, settings, visited):
            # the documents keep the path through the link, the way the folder shows them
            yield _rebased(ref, target, link)
    else:
        yield _entry_ref(link, root, info.st_mode, size=info.st_size)


def _rebased(ref: SourceRef, target: str, link: str) -> SourceRef:
    path = uri_to_path(ref.uri)
    path = link + path[len(target) :]
    return SourceRef(
        uri=path_to_uri(path), name=ref.name, size=ref.size, root=ref.root, skipped=ref.skipped
    )


def _entry_ref(path: str, root: str, mode: int, *, size: int) -> SourceRef:
    if stat.S_ISREG(mode):
        return SourceRef(uri=path_to_uri(path), name=os.path.basename(path), size=size, root=root)
    return _skipped(path, root, f"{_file_kind(mode)}, not a regular file")


def _skipped(path: str, root: str, reason: str) -> SourceRef:
    return SourceRef(uri=path_to_uri(path), name=os.path.basename(path), root=root, skipped=reason)


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISFIFO: "named pipe (FIFO)",
        stat.S_ISSOCK: "socket",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
        stat.S_ISDIR: "folder",
        stat.S_ISLNK: "symbolic link",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), "special file")


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "path longer than the system allows (PATH_MAX)"
    return exc.strerror or type(exc).__name__


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _wanted(relative: str, settings: SourceSettings) -> bool:
    return _matches(relative, settings.include) and not _matches(relative, settings.exclude)


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    return any(
        fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(relative, p.removeprefix("**/"))
        for p in patterns
    )


# --- fetching ------------------------------------------------------------------------------


def fetch(ref: SourceRef, settings: SourceSettings, policy: RetryPolicy) -> RawDocument:
    """The document's bytes. Size limit and checksum enforced; transient HTTP errors retried
    with ``policy``; mirrors tried in turn when the primary fails."""
    if ref.skipped:
        raise SkippedSource(f"skipped: {ref.skipped}", stage=Stage.FETCH)
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
    """A regular file inside its source folder, read up to the size limit. Links are followed
    only for a ref listed with its folder (``root``), so the boundary can be checked."""
    path = uri_to_path(ref.uri)
    follow = settings.follow_symlinks and ref.root is not None
    _check_boundary(path, ref.root, follow)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _open_failure(path, exc) from None
    with os.fdopen(fd, "rb", buffering=0) as file:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SkippedSource(
                f"skipped: {_file_kind(mode)}, not a regular file", stage=Stage.FETCH
            )
        check_size(os.fstat(fd).st_size, settings.max_file_bytes)
        return _read_at_most(file, settings.max_file_bytes)


def _check_boundary(path: str, root: str | None, follow: bool) -> None:
    """The file must still be where it was listed: with links followed, inside ``root``;
    otherwise no link on the way (a final link is refused by ``O_NOFOLLOW``)."""
    if follow:
        if not _inside(os.path.realpath(path), root or "/"):
            raise SkippedSource(
                "skipped: the path leads out of the source folder", stage=Stage.FETCH
            )
    elif os.path.realpath(os.path.dirname(path)) != os.path.dirname(path):
        raise SkippedSource(
            "skipped: the path goes through a symbolic link (sources.follow_symlinks)",
            stage=Stage.FETCH,
        )


def _read_at_most(file: object, limit: int) -> bytes:
    """Read until end of file; past ``limit`` bytes the document is too large (sizes that
    ``stat`` reports, e.g. 0 for /proc files, are not trusted)."""
    body = bytearray()
    while chunk := file.read(_READ_BLOCK):  # type: ignore[attr-defined]
        body += chunk
        check_size(len(body), limit)
    return bytes(body)


def _open_failure(path: str, exc: OSError) -> Exception:
    if exc.errno == errno.ENOENT:
        return SourceNotFound(f"file disappeared: {path}", stage=Stage.FETCH)
    if exc.errno == errno.ELOOP:
        return SkippedSource(
            "skipped: symbolic link not followed (sources.follow_symlinks)", stage=Stage.FETCH
        )
    return SkippedSource(f"cannot be read: {_os_reason(exc)}", stage=Stage.FETCH)


def _download_with_mirrors(ref: SourceRef, settings: SourceSettings, policy: RetryPolicy) -> bytes:
    errors: list[str] = []
    last: Exception | None = None
    for url in (ref.uri, *ref.mirrors):
        try:
            data = policy.retrying()(download, url, settings)
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
    if isinstance(last, TransientError) and not isinstance(last, DeadlineExceeded):
        raise FetchFailed("; ".join(errors), stage=Stage.FETCH) from last
    raise type(last)("; ".join(errors), stage=Stage.FETCH) from last
