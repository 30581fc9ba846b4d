"""The Kademlia routing table: 160 k-buckets of verified contacts. Pure (`now` is an argument).

Bucket i holds contacts whose XOR distance to our id is in [2**i, 2**(i+1)) (ids.bucket_index).
Each bucket keeps at most k contacts ordered from least to most recently seen, plus a small
replacement cache of newcomers that found it full.

Rules:
- Only VERIFIED contacts come here: the caller calls `seen()` after a contact answered one of our
  requests at an address listed in its own signed, CA-chained record (see docs/dht.md, "contacts").
  An id nobody verified, for instance one named in another node's NODES answer, never enters.
- Least-recently-seen eviction: a newcomer that finds its bucket full does not replace anyone.
  `seen()` answers PING_OLDEST with the least-recently-seen contact; the caller pings it and
  reports `ping_result()` (unless even that contact was heard from within `fresh_s`: then it is
  known to be alive and the newcomer is only CACHED, which saves a ping per answer on a busy
  node). If it answers it moves to the tail and stays; the newcomer waits in the
  replacement cache (most recent kept, `replacements` per bucket). Only if it does not answer is
  it removed and the freshest replacement promoted. Long-lived contacts are therefore never pushed
  out by newcomers, however many an attacker brings: this is the table's eclipse resistance
  (a contact that has been up for hours is likely to stay up, and an attacker cannot make it leave).
- `failed()`: a contact that did not answer `max_failures` requests in a row is removed (an answer
  resets the count) and the freshest replacement promoted. A failed eviction ping removes at once.
- Optional subnet cap: at most `subnet_cap` contacts per bucket from one IPv4 /24 or IPv6 /48
  (off by default: private meshes often put many nodes in one LAN, and the CA already limits who
  can have an id; turn it on for meshes spread over the Internet).
- `closest(target, n)` walks buckets in order of their distance to the target instead of sorting
  the whole table (the test compares it with a brute-force sort).
- Refresh: every bucket remembers when a lookup last targeted it; `stale_buckets()` lists those
  not looked up for `interval` seconds, from the nearest non-empty bucket outwards.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from .ids import ID_BITS, bucket_index, distance, to_id

__all__ = ["Contact", "Insert", "K", "RoutingTable"]

K = 20  # bucket size and replication factor (Kademlia's k)
REPLACEMENTS = 8  # newcomers remembered per full bucket
MAX_FAILURES = 3  # consecutive failures before a contact without a replacement is dropped
PING_STALE_S = 60.0  # a pending eviction ping older than this is forgotten
FRESH_S = 60.0  # a contact heard from this recently needs no eviction ping


@dataclass(slots=True)
class Contact:
    """A verified DHT contact: its id and the address (ip, DHT port) where it answered."""

    peer_id: bytes
    ip: str
    port: int
    first_seen: float
    last_seen: float
    failures: int = 0

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)


class Insert(enum.Enum):
    ADDED = "added"  # new contact in a bucket with room (or promoted)
    UPDATED = "updated"  # already known: moved to the tail, address and last_seen updated
    PING_OLDEST = "ping_oldest"  # bucket full: ping the returned LRS contact, then ping_result()
    CACHED = "cached"  # bucket full and a ping already pending: newcomer in the replacement cache
    REFUSED = "refused"  # subnet cap
    SELF = "self"  # our own id


def _subnet(ip: str) -> bytes:
    packed = ipaddress.ip_address(ip).packed
    return packed[:3] if len(packed) == 4 else packed[:6]


class _Bucket:
    __slots__ = ("contacts", "last_lookup", "pending", "pending_since", "replacements")

    def __init__(self) -> None:
        self.contacts: list[Contact] = []  # least recently seen first
        self.replacements: list[Contact] = []  # oldest first
        self.pending: bytes | None = None  # id of the LRS contact being pinged
        self.pending_since = 0.0
        self.last_lookup: float | None = None

    def find(self, peer_id: bytes) -> int:
        for i, c in enumerate(self.contacts):
            if c.peer_id == peer_id:
                return i
        return -1


class RoutingTable:
    def __init__(
        self,
        own_id: bytes,
        *,
        k: int = K,
        replacements: int = REPLACEMENTS,
        max_failures: int = MAX_FAILURES,
        subnet_cap: int | None = None,
        fresh_s: float = FRESH_S,
    ) -> None:
        if k < 1 or replacements < 0 or max_failures < 1 or (subnet_cap is not None and subnet_cap < 1):
            raise ValueError("k, max_failures and subnet_cap must be positive")
        self.own_id = to_id(own_id)
        self.k = k
        self.replacements = replacements
        self.max_failures = max_failures
        self.subnet_cap = subnet_cap
        self.fresh_s = fresh_s
        self._buckets = [_Bucket() for _ in range(ID_BITS)]
        self._size = 0

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return self._size

    def __contains__(self, peer_id: bytes) -> bool:
        return self.get(peer_id) is not None

    def get(self, peer_id: bytes) -> Contact | None:
        if peer_id == self.own_id:
            return None
        b = self._buckets[bucket_index(self.own_id, peer_id)]
        i = b.find(peer_id)
        return None if i < 0 else b.contacts[i]

    def contacts(self) -> Iterator[Contact]:
        for b in self._buckets:
            yield from b.contacts

    def has_room(self, peer_id: bytes) -> bool:
        """Would `peer_id` be ADDED (not only cached) if it answered now?"""
        if peer_id == self.own_id:
            return False
        b = self._buckets[bucket_index(self.own_id, peer_id)]
        return b.find(peer_id) < 0 and len(b.contacts) < self.k

    def bucket(self, index: int) -> list[Contact]:
        """A copy of bucket `index`, least recently seen first."""
        return list(self._buckets[index].contacts)

    def replacement_cache(self, index: int) -> list[Contact]:
        return list(self._buckets[index].replacements)

    def closest(self, target: bytes, n: int = K, exclude: bytes | None = None) -> list[Contact]:
        """The n contacts nearest to `target` by XOR distance, nearest first.

        Contacts of bucket i lie at distances from `target` forming one aligned interval of size
        2**i (the bits above i are those of target^own, bit i is the opposite of that bit), and
        the intervals of different buckets are disjoint; so buckets are visited in the order of
        their interval, and only the contacts of visited buckets are sorted."""
        if n <= 0:
            return []
        d = distance(target, self.own_id)
        order = []
        for i, b in enumerate(self._buckets):
            if b.contacts:
                low = ((d >> (i + 1)) << (i + 1)) | ((((d >> i) & 1) ^ 1) << i)
                order.append((low, i))
        order.sort()
        out: list[Contact] = []
        t = int.from_bytes(target, "big")
        for _, i in order:
            members = [c for c in self._buckets[i].contacts if c.peer_id != exclude]
            members.sort(key=lambda c: int.from_bytes(c.peer_id, "big") ^ t)
            out.extend(members[: n - len(out)])
            if len(out) >= n:
                break
        return out

    # ------------------------------------------------------------------ writing

    def seen(self, peer_id: bytes, ip: str, port: int, now: float) -> tuple[Insert, Contact | None]:
        """A verified contact answered us at (ip, port). Returns what happened and, for
        PING_OLDEST, the contact to ping (else the contact itself, or None)."""
        peer_id = to_id(peer_id)
        if peer_id == self.own_id:
            return Insert.SELF, None
        b = self._buckets[bucket_index(self.own_id, peer_id)]
        i = b.find(peer_id)
        if i >= 0:
            c = b.contacts.pop(i)
            if (c.ip, c.port) != (ip, port) and not self._subnet_ok(b, ip, skip=peer_id):
                # it moved into a subnet that is full here: keep it at its old address
                b.contacts.insert(i, c)
                return Insert.REFUSED, None
            c.ip, c.port, c.last_seen, c.failures = ip, port, now, 0
            b.contacts.append(c)
            if b.pending == peer_id:
                b.pending = None
            return Insert.UPDATED, c
        if not self._subnet_ok(b, ip, skip=peer_id):
            return Insert.REFUSED, None
        contact = Contact(peer_id, ip, port, first_seen=now, last_seen=now)
        if len(b.contacts) < self.k:
            b.contacts.append(contact)
            self._size += 1
            self._drop_replacement(b, peer_id)
            return Insert.ADDED, contact
        self._remember(b, contact)
        if b.pending is not None and now - b.pending_since > PING_STALE_S:
            b.pending = None
        oldest = b.contacts[0]
        if b.pending is None and now - oldest.last_seen >= self.fresh_s:
            b.pending, b.pending_since = oldest.peer_id, now
            return Insert.PING_OLDEST, oldest
        return Insert.CACHED, None

    def ping_result(self, peer_id: bytes, alive: bool, now: float) -> Contact | None:
        """The answer to a PING_OLDEST ping. If the contact is dead it is removed and the
        freshest replacement promoted (returned)."""
        b = self._buckets[bucket_index(self.own_id, peer_id)]
        if b.pending == peer_id:
            b.pending = None
        i = b.find(peer_id)
        if i < 0:
            return None
        if alive:
            c = b.contacts.pop(i)
            c.last_seen, c.failures = now, 0
            b.contacts.append(c)
            return None
        return self._evict(b, i)

    def failed(self, peer_id: bytes, now: float) -> bool:
        """A request to this contact failed (timeout, refused, bad answer). True if it was removed."""
        if peer_id == self.own_id:
            return False
        b = self._buckets[bucket_index(self.own_id, peer_id)]
        i = b.find(peer_id)
        if i < 0:
            self._drop_replacement(b, peer_id)
            return False
        c = b.contacts[i]
        c.failures += 1
        if b.pending == peer_id:
            b.pending = None
        if c.failures >= self.max_failures:
            self._evict(b, i)
            return True
        return False

    def remove(self, peer_id: bytes) -> bool:
        """Forget a contact at once (revoked, certificate expired); a replacement is promoted."""
        if peer_id == self.own_id:
            return False
        b = self._buckets[bucket_index(self.own_id, peer_id)]
        self._drop_replacement(b, peer_id)
        i = b.find(peer_id)
        if i < 0:
            return False
        self._evict(b, i)
        return True

    # ------------------------------------------------------------------ refresh

    def lookup_started(self, target: bytes, now: float) -> None:
        """A lookup for `target` ran: its bucket counts as refreshed."""
        if target != self.own_id:
            self._buckets[bucket_index(self.own_id, target)].last_lookup = now

    def stale_buckets(self, now: float, interval: float) -> list[int]:
        """Bucket indices from the nearest non-empty bucket up to 159 that no lookup targeted
        within `interval` seconds (a bucket never looked up counts as stale)."""
        nonempty = [i for i, b in enumerate(self._buckets) if b.contacts]
        if not nonempty:
            return []
        return [
            i
            for i in range(nonempty[0], ID_BITS)
            if (last := self._buckets[i].last_lookup) is None or now - last >= interval
        ]

    # ------------------------------------------------------------------ helpers

    def _subnet_ok(self, b: _Bucket, ip: str, skip: bytes) -> bool:
        if self.subnet_cap is None:
            return True
        net = _subnet(ip)
        same = sum(1 for c in b.contacts if c.peer_id != skip and _subnet(c.ip) == net)
        return same < self.subnet_cap

    def _remember(self, b: _Bucket, contact: Contact) -> None:
        if self.replacements == 0:
            return
        self._drop_replacement(b, contact.peer_id)
        b.replacements.append(contact)
        del b.replacements[: -self.replacements]

    @staticmethod
    def _drop_replacement(b: _Bucket, peer_id: bytes) -> None:
        b.replacements[:] = [c for c in b.replacements if c.peer_id != peer_id]

    def _evict(self, b: _Bucket, i: int) -> Contact | None:
        gone = b.contacts.pop(i)
        self._size -= 1
        if b.pending == gone.peer_id:
            b.pending = None
        while b.replacements:
            c = b.replacements.pop()  # the most recently seen newcomer
            if self._subnet_ok(b, c.ip, skip=c.peer_id):
                c.failures = 0
                # keep the list ordered by last_seen: the newcomer was seen when it was cached
                at = next((n for n, x in enumerate(b.contacts) if x.last_seen > c.last_seen), len(b.contacts))
                b.contacts.insert(at, c)
                self._size += 1
                return c
        return None
