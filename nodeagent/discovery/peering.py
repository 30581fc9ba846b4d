"""What a running agent does with a verified DHT record: the trust rules of docs/dht.md ("In the
agent"). Pure: no sockets, no event loop, no clock (`now` is an argument).

A record reaches `decide` only after the DHT validated it (records.py: the certificate chains to
our CA, the record is signed by the certificate's key, not expired, its node not revoked). What
the agent may then do with it:

  1. our own record, or a node the netmap revokes: nothing;
  2. a peer of the applied netmap (the server listed it: the policy lets the pair talk, or it is
     a relay, which carries frames whatever the policy; the policy is not asked again): while
     the server is connected its netmap wins outright (the server hears a node's new endpoints
     as soon as it reconnects, and a peer it gives no endpoint is reached through a hub: NAT
     traversal); with the server away the netmap's endpoint wins while it answers, and the
     record's endpoint is tried only when the netmap gives none, or when the netmap's stopped
     answering (`endpoint_failing`: no control link for a while, control/links.py keeps
     redialing it);
  3. a node the netmap does not list (a DHT peer, or one to become): while the server is
     connected its netmap is the whole membership, so nothing; the access policy the agent
     enforces (`policy_allows`: the netmap's rules, persisted or live, as the data path holds
     them compiled) must let some traffic pass between its certificate's overlay address and
     ours, in either direction: DHT data never grants what the policy denies; then, with the
     server away (or no netmap yet) it becomes a peer (a "DHT peer") at the overlay address of
     its certificate, unless another peer holds that address (the netmap's, or an earlier DHT
     peer's: the first holder keeps it); a DHT peer already held follows the newer record's
     endpoint.

`dial_endpoint` picks the control endpoint to dial from a record: the advertised one first
(reported), then what the server observed, then the others in the record's order.
`LookupThrottle` bounds the lookups the agent starts on its own (for an address no peer holds,
a peer whose endpoint stopped answering, a HELLO from an unknown peer id): at most one per key
per `per_key_s`, and a global token bucket (ratelimit.py's `TokenBucket`), so nothing a stranger
sends makes it ask the DHT faster than that.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from ..policy.index import RuleIndex
from ..protocol import netmap as nm
from ..protocol.endpoints import BadEndpoint, check_endpoint
from ..ratelimit import TokenBucket
from .records import KIND_OBSERVED, KIND_REPORTED, IPAddress, NodeRecord

__all__ = [
    "AddPeer",
    "Decision",
    "Ignore",
    "LookupThrottle",
    "SetEndpoint",
    "decide",
    "dial_endpoint",
    "policy_allows",
]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class AddPeer:
    """Make the record's node a peer (a DHT peer), dialed at `endpoint` (None: wait for its call)."""

    endpoint: Address | None


@dataclass(frozen=True, slots=True)
class SetEndpoint:
    """Dial this peer at `endpoint` from now on."""

    endpoint: Address


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


Decision = AddPeer | SetEndpoint | Ignore


@dataclass(frozen=True, slots=True)
class Held:
    """What the peer set holds for the record's peer id, if anything."""

    endpoint: Address | None
    from_dht: bool  # a DHT peer (not in the netmap)


def policy_allows(rules: RuleIndex | None, own_ip: IPAddress, peer_ip: IPAddress) -> bool:
    """May a node at overlay address `peer_ip`, which the netmap does not list, be our peer under
    the access policy we enforce? The one place the agent asks it about a peer it did not get
    from the server.

    `rules`: the policy's rules compiled (policy/index.py), as the data path holds them (None: the
    policy is "allow", or there is none: every packet passes, so every enrolled, unrevoked node
    may be a peer). With rules, the pair may peer only when some rule lets some packet pass from
    `peer_ip` to `own_ip` or from `own_ip` to `peer_ip`: the server sends each node only the rules
    that concern it, each with the node's own addresses on one side, so this is "some rule names
    both of us". A node the rules do not name (one that enrolled after the map was made, say) is
    refused until the server's map says otherwise."""
    if rules is None:
        return True
    ours, theirs = own_ip.packed, peer_ip.packed
    if len(ours) != len(theirs):
        return False  # no rule lets an IPv4 address talk to an IPv6 one
    return rules.reaches(theirs, ours) or rules.reaches(ours, theirs)


_KIND_ORDER = {KIND_REPORTED: 0, KIND_OBSERVED: 1}


def dial_endpoint(record: NodeRecord, *, allow_loopback: bool = False) -> Address | None:
    """The (ip, control port) to dial the record's node at; None if no candidate may be dialed."""
    ranked = sorted(enumerate(record.candidates), key=lambda ic: (_KIND_ORDER.get(ic[1].kind, 2), ic[0]))
    for _, c in ranked:
        e = c.endpoint
        try:
            ip = check_endpoint(e.ip, e.control_port, e.udp_port, allow_loopback=allow_loopback)
        except BadEndpoint:
            continue
        return (str(ip), e.control_port)
    return None


def decide(
    record: NodeRecord,
    *,
    own_peer_id: str,
    netmap: nm.NetMap | None,
    rules: RuleIndex | None,
    own_ip: IPAddress,
    server_connected: bool,
    held: Held | None,
    endpoint_failing: bool,
    address_holder: str | None,
    allow_loopback: bool = False,
) -> Decision:
    """What to do with a verified `record` (see the module docstring).

    `rules`, `own_ip`: the access policy's compiled rules the data path enforces (None: it
    filters nothing) and our overlay address (`policy_allows`); `held`: the peer set's entry for
    the record's peer id (None: not a peer); `endpoint_failing`:
    that peer has had no control link for a while; `address_holder`: the peer id of the peer that
    holds the record's overlay address now (None: nobody)."""
    pid = record.peer_id
    if pid == own_peer_id:
        return Ignore("own")
    if netmap is not None and any(r.peer_id == pid for r in netmap.revoked):
        return Ignore("revoked")
    endpoint = dial_endpoint(record, allow_loopback=allow_loopback)
    in_netmap = netmap is not None and netmap.peer(pid) is not None
    if in_netmap or (held is not None and not held.from_dht):
        if held is None:
            return Ignore("not_a_peer")  # a netmap peer we dropped (e.g. revoked by a DHT list)
        if endpoint is None or endpoint == held.endpoint:
            return Ignore("unchanged")
        if server_connected or (held.endpoint is not None and not endpoint_failing):
            return Ignore("netmap_wins")
        return SetEndpoint(endpoint)
    if server_connected and netmap is not None:
        return Ignore("server_connected")
    if not policy_allows(rules, own_ip, record.overlay_ip):
        return Ignore("policy")
    if address_holder is not None and address_holder != pid:
        return Ignore("address_taken")
    if held is not None:
        if endpoint is None or endpoint == held.endpoint:
            return Ignore("unchanged")
        return SetEndpoint(endpoint)
    return AddPeer(endpoint)


class LookupThrottle:
    """At most one lookup per key per `per_key_s`, and `rate` per second overall (burst `burst`);
    at most `max_keys` keys remembered (the least recently asked forgotten first)."""

    def __init__(self, per_key_s: float, rate: float, burst: float, max_keys: int = 1024) -> None:
        self.per_key_s = per_key_s
        self.max_keys = max_keys
        self.bucket = TokenBucket(rate, burst)
        self._last: OrderedDict[Hashable, float] = OrderedDict()
        self.refused = 0

    def allow(self, key: Hashable, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.per_key_s:
            self.refused += 1
            return False
        if not self.bucket.take(now):
            self.refused += 1
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True

    def forget(self, key: Hashable) -> None:
        self._last.pop(key, None)
