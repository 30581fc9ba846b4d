"""The iterative Kademlia lookup (FIND_NODE and FIND_VALUE) as a state machine. Pure.

Time in, events out. The caller (discovery/node.py) loops:

    lookup = Lookup(target, seeds=table.closest(target, k), now=now, find_value=...)
    while not lookup.done:
        for q in lookup.next_queries(now): send the request to q.address (expecting q.peer_id)
        ... as answers come: lookup.on_response(q.peer_id, contacts, now[, value, rank])
                             lookup.on_failure(q.peer_id, now)   (refused, bad answer, not enrolled)
        ... and lookup.expire(now) at lookup.next_deadline() for requests that did not answer
    lookup.result(), lookup.hops, lookup.best_value

Rules:
- alpha = 3 requests in flight; each goes to the nearest not-yet-asked candidate among the k nearest
  live ones. The lookup ends when the k nearest live candidates have all answered (or nobody is
  left to ask). A FIND_VALUE lookup also ends once `value_quorum` holders answered with a value
  (the caller validated each value; `best_value` is the one of highest rank, e.g. sequence), so
  one node serving a stale but validly signed record does not decide what we believe.
- Only a node that ANSWERED counts (the caller reports an answer only after checking that the
  responder is the enrolled node it was expected to be; see docs/dht.md, "contacts"). Contacts
  named by others are candidates, never results, until they answer themselves.
- Candidates are keyed by peer id with up to `max_addresses` addresses each: a liar naming a real
  node at a wrong address cannot make that node fail, the address from an honest node is tried
  too.
- Eclipse resistance — we chose a MARGIN, not disjoint paths (docs/dht.md explains why):
  * the candidate list is not cut at k: up to `max_candidates` (16 k) nearest candidates are kept,
    so fabricated contacts placed "nearer" than every honest node cannot push honest candidates
    out; they are tried, fail (unenrolled ids cannot prove an identity), and the honest ones
    follow;
  * every candidate remembers which responders named it (its vouchers). When `voucher_failures`
    (2) of the candidates a responder named have failed, the responder is distrusted: the
    candidates only it named are dropped untried, its later answers are ignored and it is left
    out of the result. A lying responder thus costs at most about two wasted requests.
  What it buys: with a third of responders lying (fabricated ids, or only each other), every
  honest node among the true k nearest is still found (tests/nodeagent/discovery/test_lookup.py
  shows this, and shows that a classic list cut at k is eclipsed in the same setting).
- Hops: a candidate from our own table is hop 1; one first named by a responder of hop h is hop
  h + 1 (the smallest over its vouchers). `hops` is the largest hop among the results: the number
  of sequential request rounds the answer needed.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from .ids import distance, to_id
from .table import K

__all__ = ["ALPHA", "Found", "Lookup", "Query"]

ALPHA = 3
QUERY_TIMEOUT_S = 2.0
VALUE_QUORUM = 3
VOUCHER_FAILURES = 2
MAX_ADDRESSES = 3

Address = tuple[str, int]
Rank = tuple[int, ...]  # a value's precedence (records.NodeRecord.rank): the highest wins


class _State(enum.Enum):
    NEW = 0
    IN_FLIGHT = 1
    ANSWERED = 2
    FAILED = 3  # every known address failed
    DROPPED = 4  # named only by distrusted responders, or pushed out by the candidate cap


@dataclass(frozen=True, slots=True)
class Query:
    peer_id: bytes
    address: Address
    hop: int


@dataclass(frozen=True, slots=True)
class Found:
    peer_id: bytes
    address: Address
    hop: int


class _Candidate:
    __slots__ = ("address", "addresses", "dist", "hop", "peer_id", "sent_at", "state", "tried", "vouchers")

    def __init__(self, peer_id: bytes, dist: int, hop: int) -> None:
        self.peer_id = peer_id
        self.dist = dist
        self.hop = hop
        self.addresses: list[Address] = []
        self.vouchers: dict[Address, set[bytes]] = {}  # address -> responders that named it there
        self.tried = 0  # addresses[:tried] were attempted
        self.state = _State.NEW
        self.address: Address | None = None  # in flight or answered
        self.sent_at = 0.0


class Lookup:
    def __init__(
        self,
        target: bytes,
        seeds: Iterable[tuple[bytes, Address]],
        now: float,
        *,
        own_id: bytes | None = None,
        k: int = K,
        alpha: int = ALPHA,
        query_timeout: float = QUERY_TIMEOUT_S,
        find_value: bool = False,
        value_quorum: int = VALUE_QUORUM,
        max_candidates: int | None = None,
        max_addresses: int = MAX_ADDRESSES,
        voucher_failures: int = VOUCHER_FAILURES,
    ) -> None:
        if k < 1 or alpha < 1 or value_quorum < 1 or max_addresses < 1 or voucher_failures < 1:
            raise ValueError("k, alpha, value_quorum, max_addresses and voucher_failures must be positive")
        self.target = to_id(target)
        self.own_id = own_id
        self.k = k
        self.alpha = alpha
        self.query_timeout = query_timeout
        self.find_value = find_value
        self.value_quorum = value_quorum
        self.max_candidates = max_candidates if max_candidates is not None else 16 * k
        if self.max_candidates < k:
            raise ValueError("max_candidates must be at least k")
        self.max_addresses = max_addresses
        self.voucher_failures = voucher_failures
        self.started = now
        self._by_id: dict[bytes, _Candidate] = {}
        self._order: list[tuple[int, bytes]] = []  # (distance, id), nearest first
        self._in_flight = 0
        self._fails_by_voucher: dict[bytes, int] = {}
        self.distrusted: set[bytes] = set()
        self.values: list[tuple[Rank, object, bytes, int]] = []  # (rank, value, responder, hop)
        self.queried = 0
        self.failures = 0
        for peer_id, address in seeds:
            self._add(to_id(peer_id), (address[0], address[1]), hop=1, voucher=None)

    # ------------------------------------------------------------------ events in

    def next_queries(self, now: float) -> list[Query]:
        """Requests to send now (each candidate is marked in flight)."""
        if self.done:
            return []
        out = []
        for c in self._window():
            if self._in_flight >= self.alpha:
                break
            if c.state is _State.NEW:
                c.address = c.addresses[c.tried]
                c.tried += 1
                c.state = _State.IN_FLIGHT
                c.sent_at = now
                self._in_flight += 1
                self.queried += 1
                out.append(Query(c.peer_id, c.address, c.hop))
        return out

    def on_response(
        self,
        peer_id: bytes,
        contacts: Iterable[tuple[bytes, Address]],
        now: float,
        *,
        value: object = None,
        rank: Rank = (),
    ) -> None:
        """`peer_id` answered (its identity checked by the caller) naming `contacts`; for
        FIND_VALUE also a validated `value` with a comparable `rank` (higher wins)."""
        c = self._by_id.get(peer_id)
        if c is None or c.state is not _State.IN_FLIGHT:
            return  # unexpected, or already timed out
        c.state = _State.ANSWERED
        self._in_flight -= 1
        if peer_id in self.distrusted:
            return
        if value is not None:
            self.values.append((rank, value, peer_id, c.hop))
        for n, (other, address) in enumerate(contacts):
            if n >= self.k:
                break
            if other == peer_id or other == self.own_id:
                continue
            self._add(other, (address[0], address[1]), hop=c.hop + 1, voucher=peer_id)

    def on_failure(self, peer_id: bytes, now: float) -> None:
        """The request to `peer_id` failed: refused, timed out, malformed answer, or the responder
        could not prove it is that enrolled node."""
        c = self._by_id.get(peer_id)
        if c is None or c.state is not _State.IN_FLIGHT:
            return
        self._in_flight -= 1
        self.failures += 1
        address = c.address
        assert address is not None  # set by next_queries while the request is in flight
        c.address = None
        for voucher in c.vouchers.get(address, ()):
            n = self._fails_by_voucher.get(voucher, 0) + 1
            self._fails_by_voucher[voucher] = n
            if n >= self.voucher_failures:
                self.distrust(voucher)
        c.state = _State.NEW if c.tried < len(c.addresses) else _State.FAILED
        if c.state is _State.NEW and not self._trusted_addresses_left(c):
            c.state = _State.DROPPED

    def distrust(self, responder: bytes) -> None:
        """Stop believing `responder` (also for a value that failed validation)."""
        if responder in self.distrusted:
            return
        self.distrusted.add(responder)
        for c in self._by_id.values():
            if c.state is _State.NEW and not self._trusted_addresses_left(c):
                c.state = _State.DROPPED

    def expire(self, now: float) -> list[bytes]:
        """Fail the requests that have been in flight for `query_timeout`; returns their ids."""
        late = [
            c.peer_id
            for c in self._by_id.values()
            if c.state is _State.IN_FLIGHT and now - c.sent_at >= self.query_timeout
        ]
        for peer_id in late:
            self.on_failure(peer_id, now)
        return late

    def next_deadline(self) -> float | None:
        times = [c.sent_at + self.query_timeout for c in self._by_id.values() if c.state is _State.IN_FLIGHT]
        return min(times) if times else None

    # ------------------------------------------------------------------ results

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def done(self) -> bool:
        if self.find_value and len(self.values) >= self.value_quorum:
            return True
        window = self._window()
        if all(c.state is _State.ANSWERED for c in window):
            return True  # the k nearest live candidates answered (or none is left)
        return self._in_flight == 0 and not any(c.state is _State.NEW for c in window)

    def result(self) -> list[Found]:
        """The k nearest nodes that answered and were not distrusted, nearest first."""
        out = []
        for _, peer_id in self._order:
            c = self._by_id[peer_id]
            if c.state is _State.ANSWERED and peer_id not in self.distrusted:
                assert c.address is not None  # an answer came from the address in flight
                out.append(Found(peer_id, c.address, c.hop))
                if len(out) == self.k:
                    break
        return out

    @property
    def hops(self) -> int:
        found = self.result()
        return max((f.hop for f in found), default=0)

    @property
    def best_value(self) -> tuple[Rank, object, bytes, int] | None:
        """(rank, value, responder, hop) of the highest-ranked value from a trusted responder."""
        good = [v for v in self.values if v[2] not in self.distrusted]
        return max(good, key=lambda v: v[0]) if good else None

    # ------------------------------------------------------------------ helpers

    def _live(self, c: _Candidate) -> bool:
        if c.state in (_State.FAILED, _State.DROPPED):
            return False
        return not (c.state is _State.ANSWERED and c.peer_id in self.distrusted)

    def _window(self) -> list[_Candidate]:
        """The k nearest live candidates."""
        out = []
        for _, peer_id in self._order:
            c = self._by_id[peer_id]
            if self._live(c):
                out.append(c)
                if len(out) == self.k:
                    break
        return out

    def _trusted_addresses_left(self, c: _Candidate) -> bool:
        for address in c.addresses[c.tried :]:
            vouchers = c.vouchers.get(address)
            if not vouchers or vouchers - self.distrusted:
                return True  # from our own table, or named by someone still trusted
        return False

    def _add(self, peer_id: bytes, address: Address, hop: int, voucher: bytes | None) -> None:
        c = self._by_id.get(peer_id)
        if c is None:
            dist = distance(peer_id, self.target)
            if len(self._by_id) >= self.max_candidates and not self._make_room(dist):
                return
            c = _Candidate(peer_id, dist, hop)
            self._by_id[peer_id] = c
            bisect.insort(self._order, (dist, peer_id))
        elif c.state is _State.NEW:
            c.hop = min(c.hop, hop)
        if voucher is not None:
            c.vouchers.setdefault(address, set()).add(voucher)
        if address not in c.addresses and len(c.addresses) < self.max_addresses:
            c.addresses.append(address)
        if c.state in (_State.FAILED, _State.DROPPED) and self._trusted_addresses_left(c):
            c.state = _State.NEW  # a new address, or one now named by a trusted responder
            c.hop = hop

    def _make_room(self, dist: int) -> bool:
        """Drop the farthest untried candidate if it is farther than `dist`."""
        for i in range(len(self._order) - 1, -1, -1):
            far_dist, far_id = self._order[i]
            if far_dist <= dist:
                return False
            far = self._by_id[far_id]
            if far.state in (_State.NEW, _State.FAILED, _State.DROPPED):
                del self._order[i]
                del self._by_id[far_id]
                return True
        return False
