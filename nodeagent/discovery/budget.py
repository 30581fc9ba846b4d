"""Per-source request budgets: one token bucket per source address. Pure (`now` is an argument).

The DHT port answers anyone who connects, so every source gets `rate` requests per second with a
burst of `burst`. A source is what `source_key` (ratelimit.py, re-exported here) makes of the
address: an IPv4 address, or a whole IPv6 /64 (a single host usually holds one), an IPv4-mapped
IPv6 address counting as its IPv4 address; text that is not an address (the server's "?" for a
socket without a peer name) is a source of its own, keyed by that text. At most `max_sources`
buckets are kept; the one idle longest is forgotten first (which only ever gives that source a
fresh burst), so memory stays bounded whatever the number of sources.
"""

from __future__ import annotations

from ..ratelimit import Buckets, source_key

__all__ = ["SourceBudgets", "source_key", "source_of"]


def source_of(peer: str) -> str:
    """The source a peer name counts as, for the DHT port's limits (the request budgets and the
    connection cap): `source_key` of an address, the text itself for anything else (the server's
    "?" for a socket without a peer name), which is then a source of its own."""
    try:
        return source_key(peer)
    except ValueError:
        return peer


class SourceBudgets:
    """A `Buckets` table (ratelimit.py) keyed by `source_of`, whose arguments are checked, and
    whose takes may cost more than one token."""

    def __init__(self, rate: float, burst: float, max_sources: int = 4096) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate, burst and max_sources must be positive")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets = Buckets(rate, burst, max_sources)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, source: str, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens of `source`'s budget; False (nothing spent) if it has not enough."""
        return self._buckets.take(source_of(source), now, cost)
