"""Pure reachability policy: which node may reach which, what each node's netmap says of it, and
which relay a pair falls back to. Access rules are here and nowhere else (no database, no clock).

The language (docs/policy.md; rows from meshadmin/mesh/models/policies.py, in the snapshot):

  - a rule allows traffic from its sources to its destinations with a protocol and, for tcp and
    udp, destination ports; rules only allow;
  - selectors name nodes: "*" every member, "tag:NAME" the members with that tag, "group:NAME"
    the members its own selectors name, "node:PEER_ID" one member. A node stands for its overlay
    address and the approved routes through it (a subnet behind it), not an exit node's default
    routes (0.0.0.0/0 as a source would match every member's packets);
  - the network's default: "deny" isolates every member (it accepts only what a rule allows);
    "allow" isolates only the members some rule names as a destination, and every other member
    accepts everything, as before there were rules (a rule protects its destinations).

So member b accepts a packet from member a when b is not isolated, or a rule allows it; a may
reach b when b accepts something from it. Replies to allowed flows always pass (the agents keep
the flows: nodeagent/policy/filter.py).

What a member's netmap gets (`AccessPolicy.node_policy`):
  - not isolated: the policy "allow" and no rules (its agent filters nothing);
  - isolated: "deny" and the rules that concern it, as prefixes: for each rule naming it as a
    destination, the rule's sources to its own addresses (what may reach it); for each rule naming
    it as a source, its own addresses to the rule's destinations (what it may start, whose
    replies come back); with the default "allow", its own addresses to every member that is not
    isolated, any protocol (they accept everything, so it may start anything there).
  - its peers (compute.py): every member it may reach or that may reach it, every relay (relays
    carry relayed frames whatever the policy; the policy still decides what overlay packets pass
    between a relay and a node), and a relay gets every member.

`AccessPolicy.full_mesh`: no member is isolated, so every map lists every member and says
"allow"; compute.delta_for shares one change set between ordinary members only then.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodeagent.protocol import policy as wire

if TYPE_CHECKING:  # types only: this module never touches the database
    from .snapshot import NodeRow, Snapshot

__all__ = [
    "EVERYTHING",
    "Access",
    "AccessPolicy",
    "access_policy",
    "fallback_relay",
    "is_member",
    "is_relay_candidate",
    "rank_relays",
    "relay_choices",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PortRange = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Access:
    """What a may send b: `everything`, or these (protocol, ports) pairs (ports () = every port)."""

    everything: bool = False
    allowed: tuple[tuple[str, tuple[PortRange, ...]], ...] = ()

    def __bool__(self) -> bool:
        return self.everything or bool(self.allowed)


EVERYTHING = Access(everything=True)
NOTHING = Access()


def is_member(n: NodeRow) -> bool:
    """An active node with an overlay address: one that has a netmap and appears in others'."""
    return n.active and n.overlay_ip is not None


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


@dataclass(frozen=True, slots=True)
class _Rule:
    src: int  # member bit mask
    dst: int
    proto: str
    ports: tuple[PortRange, ...]


class AccessPolicy:
    """A snapshot's access policy resolved against its members (computed once per view)."""

    def __init__(self, snapshot: Snapshot, members: tuple[NodeRow, ...]) -> None:
        self.default = snapshot.policy_default
        self.members = members
        self.bit = {n.pk: i for i, n in enumerate(members)}
        self.all = (1 << len(members)) - 1
        tagged: dict[str, int] = {}
        for i, n in enumerate(members):
            for tag in n.tags:
                tagged[tag] = tagged.get(tag, 0) | (1 << i)
        self._tagged = tagged
        self._by_peer_id = {n.peer_id: i for i, n in enumerate(members)}
        self._groups = {g.name: g.members for g in snapshot.groups}
        self.rules = tuple(_Rule(self.resolve(r.sources), self.resolve(r.destinations), r.protocol,
                                 tuple((lo, hi) for lo, hi in r.ports))
                           for r in sorted(snapshot.rules, key=lambda r: (r.position, r.pk)))
        named = 0
        for r in self.rules:
            named |= r.dst
        self.isolated = self.all if self.default == wire.DENY else named
        self.full_mesh = self.isolated == 0
        self._reach: list[int] | None = None
        self._reached_by: list[int] | None = None
        routes: dict[int, list[IPNetwork]] = {}
        for route in snapshot.routes:
            net = ipaddress.ip_network(route.prefix)
            # an exit node's default routes are not its addresses: as a rule's source, 0.0.0.0/0
            # would let every member's packets match (the filter sees addresses, not peers)
            if route.via_pk in self.bit and net.prefixlen > 0:
                routes.setdefault(route.via_pk, []).append(net)
        self._routes = routes
        # member index -> its address and routed prefixes, parsed when a rule first names it (a
        # view is loaded after every change; a network without rules never needs them)
        self._own: dict[int, tuple[IPNetwork, ...]] = {}
        self._prefixes: dict[int, tuple[str, ...]] = {}
        self._node_policies: dict[int, wire.Policy] = {}

    # --- selectors ----------------------------------------------------------------------------
    def resolve(self, selectors: Iterable[str], *, groups: bool = True) -> int:
        """The member mask a list of selectors names (unknown names name nobody)."""
        mask = 0
        for s in selectors:
            kind, _, name = s.partition(":")
            if s == "*":
                mask |= self.all
            elif kind == "tag":
                mask |= self._tagged.get(name, 0)
            elif kind == "node" and name in self._by_peer_id:
                mask |= 1 << self._by_peer_id[name]
            elif kind == "group" and groups:
                mask |= self.resolve(self._groups.get(name, ()), groups=False)
        return mask

    # --- who reaches whom ---------------------------------------------------------------------
    def _tables(self) -> tuple[list[int], list[int]]:
        if self._reach is None or self._reached_by is None:
            open_ = self.all & ~self.isolated
            reach = [open_] * len(self.members)
            reached_by = [0 if (self.isolated >> i) & 1 else self.all for i in range(len(self.members))]
            for r in self.rules:
                for i in _bits(r.src):
                    reach[i] |= r.dst
                for j in _bits(r.dst):
                    reached_by[j] |= r.src
            self._reach = [m & ~(1 << i) for i, m in enumerate(reach)]
            self._reached_by = [m & ~(1 << i) for i, m in enumerate(reached_by)]
        return self._reach, self._reached_by

    def may_reach(self, a: NodeRow, b: NodeRow) -> bool:
        """May member `a` start something to member `b` (b accepts some of what a sends)?"""
        i, j = self.bit.get(a.pk), self.bit.get(b.pk)
        if i is None or j is None or i == j:
            return False
        if self.full_mesh or not (self.isolated >> j) & 1:
            return True
        return bool((self._tables()[0][i] >> j) & 1)

    def may_use_exit(self, a: NodeRow, exit_node: NodeRow) -> bool:
        """Whether `a` may send its internet traffic through the approved exit node `exit_node`:
        its map lists the exit node's default routes only then (and its `use_exit` only then).
        A member may use an exit node it may reach (the exit node stands for its overlay address
        and its approved routes, the default routes included: a rule naming it as a destination
        lets the sources through it to the internet on that rule's protocol and ports)."""
        return self.may_reach(a, exit_node)

    def may_talk(self, a: NodeRow, b: NodeRow) -> bool:
        """May `a` and `b` exchange anything, in either direction (a reply path needs the peer)?"""
        return self.may_reach(a, b) or self.may_reach(b, a)

    def access(self, a: NodeRow, b: NodeRow) -> Access:
        """What member `a` may send member `b` (for people: "who can reach X")."""
        i, j = self.bit.get(a.pk), self.bit.get(b.pk)
        if i is None or j is None or i == j:
            return NOTHING
        if not (self.isolated >> j) & 1:
            return EVERYTHING
        every_port: set[str] = set()
        some_ports: dict[str, set[PortRange]] = {}
        for r in self.rules:
            if (r.src >> i) & 1 and (r.dst >> j) & 1:
                if r.proto == "any":
                    return EVERYTHING
                if r.ports:
                    some_ports.setdefault(r.proto, set()).update(r.ports)
                else:
                    every_port.add(r.proto)
        allowed: list[tuple[str, tuple[PortRange, ...]]] = [(proto, ()) for proto in every_port]
        allowed += [(proto, wire.canonical_ports(sorted(ports))) for proto, ports in some_ports.items()
                    if proto not in every_port]
        return Access(False, tuple(sorted(allowed)))

    # --- a member's netmap section --------------------------------------------------------------
    def prefixes(self, mask: int) -> tuple[str, ...]:
        """The canonical prefixes (protocol/policy.py order) of the members of `mask`."""
        hit = self._prefixes.get(mask)
        if hit is None:
            nets = {net for i in _bits(mask) for net in self._own_of(i)}
            ordered = sorted(nets, key=lambda n: (n.version, n.network_address, n.prefixlen))
            hit = tuple(str(n) for n in ordered)
            self._prefixes[mask] = hit
        return hit

    def _own_of(self, i: int) -> tuple[IPNetwork, ...]:
        own = self._own.get(i)
        if own is None:
            n = self.members[i]
            ip = ipaddress.ip_address(n.overlay_ip or "")
            own = self._own[i] = (ipaddress.ip_network((ip, ip.max_prefixlen)), *self._routes.get(n.pk, ()))
        return own

    def node_policy(self, me: NodeRow) -> wire.Policy:
        """The policy section of `me`'s netmap (see the module docstring)."""
        i = self.bit.get(me.pk)
        if i is None or not (self.isolated >> i) & 1:
            return wire.ALLOW_ALL
        hit = self._node_policies.get(i)
        if hit is not None:
            return hit
        me_bit = 1 << i
        own = self.prefixes(me_bit)
        rules = set()
        for r in self.rules:
            if r.dst & me_bit and r.src & ~me_bit:
                rules.add(wire.Rule(self.prefixes(r.src & ~me_bit), own, r.proto, r.ports))
            if r.src & me_bit and r.dst & ~me_bit:
                rules.add(wire.Rule(own, self.prefixes(r.dst & ~me_bit), r.proto, r.ports))
        open_ = self.all & ~self.isolated & ~me_bit
        if self.default == wire.ALLOW and open_:
            rules.add(wire.Rule(own, self.prefixes(open_), "any", ()))
        policy = wire.Policy(wire.DENY, tuple(sorted(rules)))
        self._node_policies[i] = policy
        return policy


def access_policy(snapshot: Snapshot, members: tuple[NodeRow, ...]) -> AccessPolicy:
    return AccessPolicy(snapshot, members)


# ----------------------------------------------------------------------------- relays


def is_relay_candidate(n: NodeRow) -> bool:
    """Public nodes may relay for others (a relay-flagged node too)."""
    return n.active and n.overlay_ip is not None and (n.is_public or n.is_relay)


def rank_relays(relays: list[NodeRow]) -> list[NodeRow]:
    """Preference order of relays: those with a live endpoint first, then lowest peer id."""
    return sorted(relays, key=lambda r: (r.endpoint_ip is None, r.peer_id))


def relay_choices(peer: NodeRow, ranked: list[NodeRow]) -> tuple[str | None, str | None]:
    """The two best relays towards `peer` (never `peer` itself); (None, None) for a relay peer.
    A viewer that is the first choice uses the second (see fallback_relay)."""
    if is_relay_candidate(peer):
        return None, None
    options = [r.peer_id for r in ranked if r.pk != peer.pk][:2]
    return (options[0] if options else None), (options[1] if len(options) > 1 else None)


def fallback_relay(me: NodeRow, peer: NodeRow, relays: list[NodeRow]) -> str | None:
    """The relay to use towards `peer` when no direct path works: None if `peer` is itself a relay
    or no third relay exists. Relays with a live endpoint first, then lowest peer id."""
    first, second = relay_choices(peer, rank_relays(relays))
    return second if first == me.peer_id else first
