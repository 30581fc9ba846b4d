"""Overlay IP allocation. Pure: (prefix, used addresses, reserved) -> the next free address.

Rules:
- IPv4: the network address and the broadcast address are never handed out (for /31 and /32
  every address is usable, as RFC 3021 allows).
- IPv6: the subnet-router anycast address (offset 0) is skipped.
- `reserved` addresses are skipped; meshadmin reserves none by default (the first host, e.g.
  10.10.10.1, goes to the first enrolled node), callers may pass e.g. a gateway address.
- The lowest free address wins, so allocation is deterministic and a freed address is reused.
The database's UniqueConstraint(network, overlay_ip) is the real guarantee; the service retries
when a concurrent transaction took the same address first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["PoolExhausted", "next_free_address", "pool_size"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Walking a huge IPv6 prefix address by address is pointless; past this many candidates we stop.
_MAX_SCAN = 1 << 20


class PoolExhausted(Exception):
    """No free address is left in the prefix."""


def _bounds(net: IPNetwork) -> tuple[int, int]:
    """First and last usable offsets inside the prefix."""
    if net.version == 4:
        if net.prefixlen >= 31:
            return 0, net.num_addresses - 1
        return 1, net.num_addresses - 2
    return 1, net.num_addresses - 1


def pool_size(prefix: str | IPNetwork, reserved: Iterable[str | IPAddress] = ()) -> int:
    net = ipaddress.ip_network(prefix)
    first, last = _bounds(net)
    base = int(net.network_address)
    inside = {ipaddress.ip_address(r) for r in reserved}
    skipped = sum(1 for r in inside if r in net and first <= int(r) - base <= last)
    return last - first + 1 - skipped


def next_free_address(
    prefix: str | IPNetwork,
    used: Iterable[str | IPAddress],
    reserved: Iterable[str | IPAddress] = (),
) -> IPAddress:
    """The lowest usable address of `prefix` that is neither used nor reserved."""
    net = ipaddress.ip_network(prefix)
    taken = {int(ipaddress.ip_address(a)) for a in used}
    taken |= {int(ipaddress.ip_address(a)) for a in reserved}
    first, last = _bounds(net)
    base = int(net.network_address)
    for offset in range(first, min(last, first + _MAX_SCAN - 1) + 1):
        if base + offset not in taken:
            return net.network_address + offset
    raise PoolExhausted(f"no free address left in {net}")
