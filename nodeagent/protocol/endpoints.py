"""Which endpoints a node may advertise and a peer may dial: one check for every place an
endpoint comes from (the server's REST and websocket registrations and enrollment, the netmap
an agent applies, a peer's UDP_ENDPOINT control message).

An endpoint is a unicast address another host can reach, and ports 1..65535. Refused:

    unspecified     0.0.0.0, ::, and 0.0.0.0/8 ("this network", never a destination)
    loopback        127.0.0.0/8, ::1 (unless `allow_loopback`: every node on one host, a lab)
    link-local      169.254.0.0/16 (cloud metadata services live there), fe80::/10
    multicast       224.0.0.0/4, ff00::/8
    broadcast       255.255.255.255

IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are judged as the IPv4 address they carry. Private
and benchmark ranges (10/8, 192.168/16, 198.18/15, ...) are accepted: meshes run on them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

__all__ = ["BadEndpoint", "check_endpoint", "check_endpoint_ip", "check_port", "endpoint_text"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class BadEndpoint(ValueError):
    """An address or port no peer should be sent to; the message says which and why."""


def check_endpoint_ip(ip: str | IPAddress, *, allow_loopback: bool = False) -> IPAddress:
    """The address, parsed, if a peer may be sent to it; BadEndpoint otherwise."""
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        addr = ip
    else:
        try:
            if not isinstance(ip, str):
                raise TypeError
            addr = ipaddress.ip_address(ip.strip())
        except (ValueError, TypeError):
            raise BadEndpoint(f"{ip!r} is not an IP address") from None
    judged = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr
    if judged.is_unspecified or (judged.version == 4 and judged in _THIS_NETWORK):
        raise BadEndpoint(f"{addr} is an unspecified address, not a destination")
    if judged.is_loopback and not allow_loopback:
        raise BadEndpoint(f"{addr} is a loopback address")
    if judged.is_link_local:
        raise BadEndpoint(f"{addr} is a link-local address")
    if judged.is_multicast:
        raise BadEndpoint(f"{addr} is a multicast address")
    if judged == _BROADCAST:
        raise BadEndpoint(f"{addr} is the broadcast address")
    return addr


def check_port(port: int, what: str = "port") -> int:
    if type(port) is not int or not 1 <= port <= 65535:
        raise BadEndpoint(f"{what} must be 1..65535, not {port!r}")
    return port


def check_endpoint(ip: str | IPAddress, control_port: int, udp_port: int, *,
                   allow_loopback: bool = False) -> IPAddress:
    """A whole endpoint (address, TCP control port, UDP data port); returns the parsed address."""
    addr = check_endpoint_ip(ip, allow_loopback=allow_loopback)
    check_port(control_port, "control port")
    check_port(udp_port, "UDP port")
    return addr


def endpoint_text(addr: tuple[Any, ...]) -> str:
    """An (address, port, ...) tuple as logs and the status document write it: "198.18.0.1:9443",
    an IPv6 address in brackets ("[fd00::1]:9443")."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
