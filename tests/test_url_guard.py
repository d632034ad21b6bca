"""The download guard refuses every spelling of a non-public address before connecting."""

from __future__ import annotations

import ipaddress

import pytest

from genai_ingest.config import SourceSettings
from genai_ingest.failures.errors import ErrorKind, SourceRefused
from genai_ingest.sources.download import check_url

PRIVATE = ("127.0.0.1", "10.1.2.3", "169.254.169.254", "192.168.0.1", "100.64.0.1", "0.0.0.0")
PUBLIC = ("8.8.8.8", "93.184.215.14")


def spellings(dotted: str) -> dict[str, str]:
    """URL hosts that all reach ``dotted``: IPv4 forms the resolver reads, and IPv6 embeddings."""
    v4 = ipaddress.IPv4Address(dotted)
    value, octets = int(v4), dotted.split(".")
    high, low = f"{value >> 16:x}", f"{value & 0xFFFF:x}"
    client = int(v4) ^ 0xFFFFFFFF  # Teredo stores its client address inverted
    return {
        "decimal": str(value),
        "hex": hex(value),
        "octal dotted": ".".join(f"0{int(o):o}" for o in octets),
        "hex dotted": ".".join(hex(int(o)) for o in octets),
        "short": f"{octets[0]}.{int(octets[1]) << 16 | int(octets[2]) << 8 | int(octets[3])}",
        "mapped": f"[::ffff:{dotted}]",
        "mapped hex": f"[::ffff:{high}:{low}]",
        "compatible": f"[::{dotted}]",
        "compatible hex": f"[::{high}:{low}]",
        "translated": f"[::ffff:0:{high}:{low}]",
        "nat64": f"[64:ff9b::{high}:{low}]",
        "nat64 local-use": f"[64:ff9b:1::{high}:{low}]",
        "6to4": f"[2002:{high}:{low}::1]",
        "teredo": f"[2001:0:4136:e378:8000:63bf:{client >> 16:x}:{client & 0xFFFF:x}]",
    }


CASES = [
    (f"{dotted} {name}", f"http://{host}/a.pdf")
    for dotted in PRIVATE
    for name, host in spellings(dotted).items()
]


@pytest.mark.parametrize(("spelling", "url"), CASES, ids=[case[0] for case in CASES])
def test_every_spelling_of_a_private_address_is_refused(spelling: str, url: str) -> None:
    with pytest.raises(SourceRefused, match="non-public address") as info:
        check_url(url, SourceSettings())
    assert info.value.kind is ErrorKind.PERMANENT


@pytest.mark.parametrize("dotted", PUBLIC)
def test_public_addresses_pass_in_every_routable_spelling(dotted: str) -> None:
    routable = ("decimal", "hex", "octal dotted", "short", "nat64", "6to4")
    for name in routable:
        check_url(f"https://{spellings(dotted)[name]}/a.pdf", SourceSettings())
    check_url("https://[2606:4700:4700::1111]/a.pdf", SourceSettings())


def test_private_spellings_pass_when_private_networks_are_allowed() -> None:
    allowed = SourceSettings(allow_private_networks=True)
    for host in spellings("127.0.0.1").values():
        check_url(f"http://{host}/a.pdf", allowed)
