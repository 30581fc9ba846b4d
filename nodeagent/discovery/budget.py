"""Per-source request budgets: one token bucket per source address. Pure (`now` is an argument).

The DHT port answers anyone who connects, so every source (an IP address; a whole IPv6 /64 is one
source, since a single host usually holds one) gets `rate` requests per second with a burst of
`burst`. At most `max_sources` buckets are kept; the one idle longest is forgotten first (which
only ever gives that source a fresh burst), so memory stays bounded whatever the number of
sources.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

__all__ = ["SourceBudgets", "source_key"]


def source_key(ip: str) -> str:
    """The budget key of a source address: the address itself, or its /64 for IPv6."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr.ipv4_mapped or addr) if isinstance(addr, ipaddress.IPv6Address) else str(addr)


class SourceBudgets:
    def __init__(self, rate: float, burst: float, max_sources: int = 4096) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate, burst and max_sources must be positive")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, stamp)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, source: str, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens of `source`'s budget; False (nothing spent) if it has not enough."""
        key = source_key(source)
        tokens, stamp = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - stamp) * self.rate)
        ok = tokens >= cost
        if ok:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return ok
