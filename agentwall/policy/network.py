"""Host classification for the SSRF rules.

Attackers spell addresses the way resolvers and URL parsers accept them, not
the way people write them: ``169.254.169.254`` is also ``2852039166``,
``0xa9fea9fe``, ``0251.0376.0251.0376``, ``169.254.43518``,
``[::ffff:169.254.169.254]``, ``[::ffff:a9fe:a9fe]``, fullwidth digits that
IDNA maps to ASCII, and names such as ``metadata.google.internal``.  This
module parses every one of those forms (the inet_aton rules for IPv4, the
stdlib for IPv6 including v4-mapped, v4-compatible and NAT64 embeddings) and
says whether a host is a cloud-metadata endpoint or a loopback/private one.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from typing import Literal

HostClass = Literal["metadata", "private"]

_METADATA_V4 = (
    ipaddress.IPv4Network("169.254.0.0/16"),  # link-local: AWS/GCP/Azure IMDS, ECS, ...
    ipaddress.IPv4Network("100.100.100.200/32"),  # Alibaba Cloud
    ipaddress.IPv4Network("192.0.0.192/32"),  # Oracle Cloud
)
_METADATA_V6 = (
    ipaddress.IPv6Network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
)
_PRIVATE_V4 = (
    ipaddress.IPv4Network("0.0.0.0/8"),
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
    ipaddress.IPv4Network("100.64.0.0/10"),
    ipaddress.IPv4Network("198.18.0.0/15"),
)
_PRIVATE_V6 = (
    ipaddress.IPv6Network("::/128"),
    ipaddress.IPv6Network("::1/128"),
    ipaddress.IPv6Network("fc00::/7"),
    ipaddress.IPv6Network("fe80::/10"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPAT = ipaddress.IPv6Network("::/96")

METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.platformequinix.com",
    }
)
LOOPBACK_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "localhost6"}
)
# Wildcard DNS services that resolve a name to the address spelled inside it,
# and names that always resolve to loopback.
_EMBEDDING_SUFFIXES = (".nip.io", ".sslip.io", ".xip.io", ".traefik.me")
_LOOPBACK_SUFFIXES = (".localhost", ".localtest.me", ".lvh.me", ".localh.st")

_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
# Invisible code points that host parsers delete before resolving: UTS 46
# "ignored" (the WHATWG URL parser: browsers, Node's URL and fetch) and IDNA
# 2003 nameprep "mapped to nothing" (Python's idna codec).  To Node,
# "met\u200badata.google.internal" *is* the metadata host.
IGNORED_IN_HOSTS: dict[int, None] = dict.fromkeys(
    [0xAD, 0x34F, 0x1806, 0x180B, 0x180C, 0x180D, 0x180F, 0x200B, 0x200C, 0x200D, 0x2060,
     0x2064, 0xFEFF, *range(0xFE00, 0xFE10), *range(0x1BCA0, 0x1BCA4),
     *range(0xE0100, 0xE01F0)]
)  # fmt: skip


def clean_host(host: str) -> str:
    """Lower-case, IDNA-ish mapping of a host as a URL parser would see it."""
    h = host.strip()
    if not h.isascii():
        h = unicodedata.normalize("NFKC", h.translate(_DOTS).translate(IGNORED_IN_HOSTS))
    h = h.lower()
    if h.startswith("[") and "]" in h:
        h = h[1 : h.index("]")]
    return h.rstrip(".")


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton semantics: 1-4 parts, each decimal, octal (leading 0) or hex
    (0x); the last part fills the remaining bytes."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums: list[int] = []
    for part in parts:
        if not part:
            return None
        try:
            if part[:2] in ("0x", "0X"):
                n = int(part[2:], 16) if len(part) > 2 else 0
            elif len(part) > 1 and part[0] == "0":
                n = int(part[1:], 8)
            else:
                if not part.isdigit() or not part.isascii():
                    return None
                n = int(part, 10)
        except ValueError:
            return None
        nums.append(n)
    last_bytes = 5 - len(nums)
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256**last_bytes:
        return None
    value = 0
    for n in nums[:-1]:
        value = value * 256 + n
    value = value * 256**last_bytes + nums[-1]
    return ipaddress.IPv4Address(value)


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if ":" in host:
        h = host.split("%", 1)[0]  # zone id
        try:
            v6 = ipaddress.IPv6Address(h)
        except ValueError:
            return None
        if v6.ipv4_mapped is not None:
            return v6.ipv4_mapped
        if v6 in _NAT64 or (v6 in _V4_COMPAT and int(v6) > 1):
            return ipaddress.IPv4Address(int(v6) & 0xFFFFFFFF)
        return v6
    return parse_ipv4(host)


def classify_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> HostClass | None:
    if isinstance(ip, ipaddress.IPv4Address):
        if any(ip in n for n in _METADATA_V4):
            return "metadata"
        if any(ip in n for n in _PRIVATE_V4):
            return "private"
        return None
    if any(ip in n for n in _METADATA_V6):
        return "metadata"
    if any(ip in n for n in _PRIVATE_V6):
        return "private"
    return None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def classify_host(raw_host: str) -> tuple[HostClass | None, str, IPAddress | None]:
    """(class, cleaned host, parsed address or None)."""
    host = clean_host(raw_host)
    if not host:
        return None, host, None
    ip = parse_ip(host)
    if ip is not None:
        return classify_ip(ip), host, ip
    if host in METADATA_NAMES:
        return "metadata", host, None
    if (
        host in LOOPBACK_NAMES
        or host.endswith(_LOOPBACK_SUFFIXES)
        or "." + host in _LOOPBACK_SUFFIXES  # the apex names resolve to 127.0.0.1 too
    ):
        return "private", host, None
    for suffix in _EMBEDDING_SUFFIXES:
        if host.endswith(suffix):
            # 127.0.0.1.nip.io, app-10-0-0-1.sslip.io, a9fea9fe.nip.io
            labels = host[: -len(suffix)].replace("-", ".").split(".")
            embedded = parse_ipv4(".".join(labels[-4:])) if len(labels) >= 4 else None
            if embedded is None and len(labels[-1]) == 8:
                embedded = parse_ipv4("0x" + labels[-1])
            if embedded is not None:
                return classify_ip(embedded), host, embedded
    return None, host, None
