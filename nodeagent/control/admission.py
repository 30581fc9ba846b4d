"""The limits in front of the handshake: per source first, per peer only once authenticated. Pure:
no sockets, no clock (`now` is an argument).

- `source_key(ip)`: what counts as one source: an IPv4 address, or an IPv6 /64 (one subscriber
  usually holds a whole /64, so single IPv6 addresses are free to an attacker); an IPv4-mapped
  IPv6 address is its IPv4 address. Defined in ratelimit.py (the DHT's budgets use it too),
  re-exported here.
- `Bucket`: a token bucket (`rate` per second, `burst`): ratelimit.py's `TokenBucket`.
- `Buckets`: one Bucket per key, at most `max_keys` remembered (the least recently used is
  forgotten: it would have refilled anyway, and a stranger cannot grow the map). Defined in
  ratelimit.py, re-exported here with `Bucket`.
- `Doorway`: the connections of the control port that have not authenticated yet, at most
  `per_source` per source and `total` overall. A newcomer is never turned away for lack of room:
  it takes the place of the oldest unauthenticated connection of its own source when that source
  is at its share, otherwise (the doorway is full) of the oldest connection of the source holding
  the most. A connection leaves the doorway as soon as its HELLO's signature verifies, and then
  nothing evicts it. So idle connections cannot hold the door shut against a peer: the peer's
  connection needs to last only from its connect to its HELLO's verification, and pushing it out
  in that time takes `total` newer connections, which the per-source rate spreads over many
  sources.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from ..ratelimit import Buckets, TokenBucket, source_key

__all__ = ["Bucket", "Buckets", "Doorway", "source_key"]


Bucket = TokenBucket  # the name this module gave it; the class is ratelimit.py's


C = TypeVar("C", bound=Hashable)  # a connection (the control server's stream writer)


class Doorway(Generic[C]):
    """Unauthenticated connections, oldest first (see the module docstring)."""

    def __init__(self, total: int, per_source: int) -> None:
        if not 1 <= per_source <= total:
            raise ValueError("need 1 <= per_source <= total")
        self.total = total
        self.per_source = per_source
        self._waiting: OrderedDict[C, Hashable] = OrderedDict()  # connection -> source
        self._count: dict[Hashable, int] = {}

    def enter(self, conn: C, source: Hashable) -> list[C]:
        """Let `conn` (from `source`) in; returns the connections it displaced (to be closed)."""
        victims: list[C] = []
        if self._count.get(source, 0) >= self.per_source:
            victims.append(self._oldest_of(source))
        elif len(self._waiting) >= self.total:
            most = max(self._count.values())
            crowded = {s for s, n in self._count.items() if n == most}
            victims.append(next(c for c, s in self._waiting.items() if s in crowded))
        for victim in victims:
            self.leave(victim)
        self._waiting[conn] = source
        self._count[source] = self._count.get(source, 0) + 1
        return victims

    def leave(self, conn: C) -> bool:
        """`conn` authenticated, or closed: it no longer counts. False if it was not waiting."""
        source = self._waiting.pop(conn, None)
        if source is None:
            return False
        left = self._count[source] - 1
        if left:
            self._count[source] = left
        else:
            del self._count[source]
        return True

    def _oldest_of(self, source: Hashable) -> C:
        return next(c for c, s in self._waiting.items() if s == source)

    def __contains__(self, conn: object) -> bool:
        return conn in self._waiting

    def __len__(self) -> int:
        return len(self._waiting)

    def of(self, source: Hashable) -> int:
        return self._count.get(source, 0)
