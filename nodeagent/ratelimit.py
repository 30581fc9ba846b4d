"""Rate limits: a token bucket, and what one source is to a per-source limit. Pure: no clock (`now`
is an argument), no I/O.

- `TokenBucket`: a rate cap with a burst, the one refill-and-take there is. Used by the data path
  (tunnel/datapath.py `Peer.bucket`: what a hub relays for one peer, tunnel/relay.py), the
  handshake admission (control/handshakes.py `HandshakeBucket`, and admission.py's `Bucket`, the
  same class), the DHT's lookup throttle (discovery/peering.py `LookupThrottle`), and through
  `Buckets` by the rest. The copies it replaced differed only for a clock reading earlier than the
  last one (every caller's clock is monotonic): the relay's subtracted the gap, the DHT budgets'
  moved its stamp back to it (crediting the gap twice on the next reading); this one adds nothing
  and keeps its stamp, as admission.py's did.
- `Buckets`: one TokenBucket per key, at most `max_keys` of them (the least recently used is
  forgotten first). The control port's per-source rate (control/server.py), the handshakes' per
  link and per hub (control/handshakes.py), and the DHT's request budgets (discovery/budget.py
  `SourceBudgets`, which keys by `source_key` and checks its arguments).
- `source_key(ip)`: what counts as one source, for the control port's limits (control/admission.py,
  control/server.py) and the DHT's request budgets (discovery/budget.py): an IPv4 address, or an
  IPv6 /64 (one subscriber usually holds a whole /64, so single IPv6 addresses are free to an
  attacker); an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a dual-stack socket's IPv4 peer) is
  its IPv4 address, and an IPv6 zone (`fe80::1%eth0`) is dropped.

`source_key` is the one definition; control/admission.py and discovery/budget.py each had their
own until now (both re-export this one). The two agreed on addresses and differed at the edges:
the DHT's returned text that is not an address unchanged, and kept the zone of an IPv6 address
that is the first of its /64 (`fe80::%eth0` -> `fe80::%eth0/64`, a quirk of ipaddress, while
`fe80::1%eth0` -> `fe80::/64`); admission's stripped everything after a `%` before parsing, so it
took an IPv4 address with a zone and an empty zone (`198.18.0.7%eth0`, `fe80::1%`). Now text that
is not an IP address raises ValueError, and each caller says what such a source is: the control
server keys it by the whole peer name (as before), `SourceBudgets` by the text itself (as before).
A socket reports no such text, and of the zone quirk only `fe80::%<link>` could come from one
(the kernel gives a zone only to link-local addresses), the subnet-router anycast address, which
hosts do not connect from: the limits as they run are unchanged.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["Buckets", "TokenBucket", "source_key"]


def source_key(ip: str) -> str:
    """The key of one source: an IPv4 address, or the /64 of an IPv6 address, as canonical text.

    `198.18.0.7` -> `198.18.0.7`; `::ffff:198.18.0.7` -> `198.18.0.7`; `2001:DB8:1:2::9` and
    `2001:db8:1:2:ffff::1` -> `2001:db8:1:2::/64`; `fe80::1%eth0` -> `fe80::/64`. Every other IPv6
    address is its /64 too, including the ones that carry an IPv4 address some other way (the
    IPv4-compatible `::a.b.c.d` and translated `::ffff:0:a.b.c.d` forms fall in `::/64`, with
    `::1`; a 6to4 or Teredo address is the /64 it is in), since none of them is how a socket
    reports an IPv4 peer. Raises ValueError for text that is not an IP address (as `ipaddress`
    reads it: no brackets, prefix length, surrounding spaces, leading zeros in IPv4, or zone on an
    IPv4 address), and TypeError for anything but a str (`ipaddress` would take an int or packed
    bytes, which no socket gives as a peer address).
    """
    if not isinstance(ip, str):
        raise TypeError(f"source_key: an address as text, not {type(ip).__name__}")
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return str(addr)
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))  # built from the number: no zone


class TokenBucket:
    """`rate` tokens per second up to `burst`; starts full. `burst` defaults to a tenth of a
    second's worth, at least 64 (the relay's cap per peer). `now`: when it was made; tokens accrue
    from then (0.0: before every reading of a monotonic clock, as the bucket starts full anyway)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = max(64.0, rate / 10) if burst is None else float(burst)
        self.tokens = self.burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if the bucket holds that many at `now`; False, and nothing spent,
        if not. A reading earlier than the latest one adds nothing and leaves the stamp at the
        latest, so readings that arrive out of order neither gain nor lose tokens."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


class Buckets:
    """One TokenBucket per key (a source, a link, a hub), at most `max_keys` of them: the least
    recently used is forgotten first (it only gets a fresh burst back, and a stranger cannot grow
    the table)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)

    def forget(self, key: Hashable) -> None:
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)
