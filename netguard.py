"""Which addresses and hosts may be fetched from: the SSRF guard.

The host is resolved once and every address it resolves to is checked; callers connect only to
the addresses returned here, so a DNS answer cannot change between the check and the connect.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Protocol

from errors import BlockedAddress, OriginUnreachable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class Policy(Protocol):
    def host_allowed(self, host: str) -> bool: ...
    def address_allowed(self, ip: IPAddress) -> str | None: ...


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` must not be fetched from, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if ip in _NAT64 or ip in _NAT64_LOCAL:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(embedded)
    for attr in ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_private",
                 "is_reserved"):
        if getattr(ip, attr):
            return attr[3:].replace("_", "-")
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT"
    if not ip.is_global:
        return "not globally routable"
    return None


def resolve(host: str, port: int, options: Policy) -> list[tuple]:
    """getaddrinfo once; every address must pass the check. The caller connects only to these."""
    if not options.host_allowed(host):
        raise BlockedAddress(f"host {host} is not in ALLOWED_HOSTS")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        permanent = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5))
        raise OriginUnreachable(f"DNS lookup failed for {host}: {exc.strerror}", retryable=not permanent) from None
    for info in infos:
        address = info[4][0]
        problem = options.address_allowed(ipaddress.ip_address(address.split("%", 1)[0]))
        if problem:
            raise BlockedAddress(f"{host} resolves to {address} ({problem}), which is not allowed")
    return infos
