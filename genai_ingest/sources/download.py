"""HTTP(S) downloads of document sources, guarded against server-side request forgery.

* Scheme and host of the URL and of every redirect target are checked before connecting:
  only ``http``/``https``; hosts that resolve to loopback, private, link-local (cloud
  metadata at 169.254.169.254), multicast or reserved addresses are refused unless
  ``sources.allow_private_networks`` is on. Every spelling counts: the resolver reads
  decimal, octal and hex IPv4, and an IPv6 address that embeds an IPv4 one (mapped,
  compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4, Teredo) is judged by both.
* Redirects are followed by hand, at most ``sources.max_redirects``; a loop is permanent.
* One deadline, ``sources.download_timeout_s``, covers the whole download (connect, every
  read, every redirect), so a server dripping one byte at a time cannot hold a run.
* The body is streamed and abandoned past ``sources.max_file_bytes``.

The remote embedding endpoint is configuration, not a document source: it is not filtered.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

import httpx

from genai_ingest.config import SourceSettings
from genai_ingest.failures.errors import (
    DeadlineExceeded,
    DocumentTooLarge,
    FetchFailed,
    RateLimited,
    ResourceLimit,
    SourceNotFound,
    SourceRefused,
    Stage,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = ("http", "https")
#: IPv6 prefixes whose low 32 bits are an IPv4 address: IPv4-compatible (RFC 4291) and
#: IPv4-translated (RFC 2765); the NAT64 well-known prefix (RFC 6052) is judged by its IPv4 one.
_LOW_32_BITS_IPV4 = (ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("::ffff:0:0:0/96"))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: NAT64 local-use prefix (RFC 8215): translates to networks of the operator's choosing.
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
_REDIRECTS = (301, 302, 303, 307, 308)


def download(url: str, settings: SourceSettings) -> bytes:
    """The body of ``url`` after its redirects, within the size limit and the total deadline."""
    deadline = time.monotonic() + settings.download_timeout_s
    seen: list[str] = []
    with httpx.Client(follow_redirects=False) as client:
        while True:
            check_url(url, settings)
            seen.append(url)
            target = _get(client, url, settings, deadline)
            if isinstance(target, bytes):
                return target
            if target in seen:
                raise ResourceLimit(f"redirect loop: {target} redirects back", stage=Stage.FETCH)
            if len(seen) > settings.max_redirects:
                raise ResourceLimit(
                    f"more than {settings.max_redirects} redirects from {seen[0]} "
                    "(sources.max_redirects)",
                    stage=Stage.FETCH,
                )
            url = target


def check_url(url: str, settings: SourceSettings) -> None:
    """Refuse a URL whose scheme is not HTTP(S) or whose host is internal (see module doc)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES:
        raise SourceRefused(
            f"refused {parts.scheme or 'relative'}:// URL {url}: only http and https are fetched",
            stage=Stage.FETCH,
        )
    if not parts.hostname:
        raise SourceRefused(f"refused URL without a host: {url}", stage=Stage.FETCH)
    if settings.allow_private_networks:
        return
    for address in _addresses(parts.hostname, parts.port):
        if not is_public(address):
            raise SourceRefused(
                f"refused {url}: {parts.hostname} is a non-public address ({address}); "
                "set sources.allow_private_networks to fetch from internal networks",
                stage=Stage.FETCH,
            )


def is_public(address: IPAddress) -> bool:
    """Whether ``address``, and every IPv4 address it embeds, is globally routable unicast."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL_USE or address.is_site_local:
            return False
        if address in _NAT64:  # DNS64 spells every IPv4 host this way: judge the IPv4 one
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if not all(is_public(inner) for inner in embedded_ipv4(address)):
            return False
    return address.is_global and not (
        address.is_private
        or address.is_reserved
        or address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
    )


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 one carries: mapped, compatible, translated, 6to4, Teredo."""
    inner = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if any(address in network for network in _LOW_32_BITS_IPV4):
        inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [found for found in inner if found is not None]


def _addresses(host: str, port: int | None) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchFailed(f"cannot resolve {host}: {exc.strerror}", stage=Stage.FETCH) from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _get(client: httpx.Client, url: str, settings: SourceSettings, deadline: float) -> bytes | str:
    """One GET: the body, or the absolute URL it redirects to."""
    limit = settings.max_file_bytes
    try:
        with client.stream("GET", url, timeout=_remaining(deadline, url, settings)) as response:
            if response.status_code in _REDIRECTS and "location" in response.headers:
                return urljoin(url, response.headers["location"])
            _raise_for_status(response, url)
            check_size(int(response.headers.get("content-length") or 0), limit)
            body = bytearray()
            for part in response.iter_bytes():
                body += part
                check_size(len(body), limit)
                _remaining(deadline, url, settings)
            return bytes(body)
    except httpx.TimeoutException as exc:
        raise _timed_out(url, settings, type(exc).__name__) from exc
    except httpx.TransportError as exc:
        raise FetchFailed(f"{type(exc).__name__} fetching {url}", stage=Stage.FETCH) from exc


def _remaining(deadline: float, url: str, settings: SourceSettings) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timed_out(url, settings, "deadline reached")
    return left


def _timed_out(url: str, settings: SourceSettings, what: str) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"download of {url} did not finish within {settings.download_timeout_s:g}s "
        f"({what}; sources.download_timeout_s)",
        stage=Stage.FETCH,
    )


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise DocumentTooLarge(
            f"{size} bytes exceeds the {limit}-byte limit (sources.max_file_bytes)",
            stage=Stage.FETCH,
        )


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
