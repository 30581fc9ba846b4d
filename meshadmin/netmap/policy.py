"""Pure reachability policy: which node may reach which, what each node's netmap says of it, and
which relay a pair falls back to. Access rules are here and nowhere else (no database, no clock).

The language (docs/policy.md; rows from meshadmin/mesh/models/policies.py, in the snapshot):

  - a rule allows traffic from its sources to its destinations with a protocol and, for tcp and
    udp, destination ports; rules only allow;
  - selectors name nodes: "*" every member, "tag:NAME" the members with that tag, "group:NAME"
    the members its own selectors name, "node:PEER_ID" one member. A node stands for its overlay
    address and the approved routes through it (a subnet behind it), not an exit node's default
    routes (0.0.0.0/0 as a source would match every member's packets);
  - "internet", as a rule's destination only: every address outside the mesh (not the overlay
    network, not an approved subnet route), reached through an approved exit node;
  - the network's default: "deny" isolates every member (it accepts only what a rule allows);
    "allow" isolates only the members some rule names as a destination, and every other member
    accepts everything, as before there were rules (a rule protects its destinations). The
    internet is protected the same way: under "allow" every member may use an exit node until a
    rule names "internet"; then, as under "deny", only the sources of such rules may.

So member b accepts a packet from member a when b is not isolated, or a rule allows it; a may
reach b when b accepts something from it. Replies to allowed flows always pass (the agents keep
the flows: nodeagent/policy/filter.py). Member a may use exit node x when the internet is open
or a rule lets a reach "internet"; reaching x's own address is another matter.

What a member's netmap gets (`AccessPolicy.node_policy`):
  - not isolated: the policy "allow" and no rules (its agent filters nothing);
  - isolated: "deny" and the rules that concern it, as prefixes: for each rule naming it as a
    destination, the rule's sources to its own addresses (what may reach it); for each rule naming
    it as a source, its own addresses to the rule's destinations (what it may start, whose
    replies come back); with the default "allow", its own addresses to every member that is not
    isolated, any protocol (they accept everything, so it may start anything there);
  - an exit node filters when it is isolated or the internet is protected: besides the above
    (or, when it is not isolated, every other member to its own addresses), the members that
    may use it to the internet's prefixes, on their rules' protocols and ports;
  - a member that filters and may use an exit node also gets its own addresses to the
    internet's prefixes (what it may start there, whose replies come back);
  - its peers (compute.py): every member it may reach or that may reach it, every relay (relays
    carry relayed frames whatever the policy; the policy still decides what overlay packets pass
    between a relay and a node), and a relay gets every member.

`AccessPolicy.full_mesh`: no member is isolated and every member may use every exit node, so
every map lists every member and says "allow"; compute.delta_for shares one change set between
ordinary members only then.
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
    "INTERNET",
    "Access",
    "AccessPolicy",
    "access_policy",
    "complement",
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
INTERNET = "internet"  # a rule destination: every address outside the mesh, through an exit node
_EVERY = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def _combine(grants: Iterable[tuple[str, tuple[PortRange, ...]]]) -> Access:
    """The Access that rules granting these (protocol, ports) pairs add up to."""
    every_port: set[str] = set()
    some_ports: dict[str, set[PortRange]] = {}
    for proto, ports in grants:
        if proto == "any":
            return EVERYTHING
        if ports:
            some_ports.setdefault(proto, set()).update(ports)
        else:
            every_port.add(proto)
    allowed: list[tuple[str, tuple[PortRange, ...]]] = [(proto, ()) for proto in every_port]
    allowed += [(proto, wire.canonical_ports(sorted(ports))) for proto, ports in some_ports.items()
                if proto not in every_port]
    return Access(False, tuple(sorted(allowed)))


def is_member(n: NodeRow) -> bool:
    """An active node with an overlay address: one that has a netmap and appears in others'."""
    return n.active and n.overlay_ip is not None


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def complement(excluded: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """The fewest prefixes that cover every address, IPv4 and IPv6, outside `excluded`, in the
    canonical order (IPv4 first, then by address)."""
    pieces = list(_EVERY)
    for ex in excluded:
        rest: list[IPNetwork] = []
        for p in pieces:
            if p.version != ex.version or not p.overlaps(ex):
                rest.append(p)
            elif ex.subnet_of(p):  # type: ignore[arg-type]  # same version, checked above
                rest.extend(p.address_exclude(ex))  # type: ignore[arg-type]
            # else p lies inside ex: gone
        pieces = rest
    return tuple(sorted(pieces, key=lambda n: (n.version, n.network_address, n.prefixlen)))


@dataclass(frozen=True, slots=True)
class _Rule:
    src: int  # member bit mask
    dst: int
    proto: str
    ports: tuple[PortRange, ...]
    internet: bool = False  # its destinations name "internet"


class AccessPolicy:
    """A snapshot's access policy resolved against its members (computed once per view)."""

    def __init__(self, snapshot: Snapshot, members: tuple[NodeRow, ...]) -> None:
        self.default = snapshot.policy_default
        self.members = members
        self._prefix_len = snapshot.prefix_len
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
                                 tuple((lo, hi) for lo, hi in r.ports), INTERNET in r.destinations)
                           for r in sorted(snapshot.rules, key=lambda r: (r.position, r.pk)))
        named = 0
        internet_users = 0
        for r in self.rules:
            named |= r.dst
            if r.internet:
                internet_users |= r.src
        self.isolated = self.all if self.default == wire.DENY else named
        # the internet, protected like a member: open under "allow" until a rule names it
        self.internet_open = self.default != wire.DENY and not any(r.internet for r in self.rules)
        self.internet_users = self.all if self.internet_open else internet_users
        self._reach: list[int] | None = None
        self._reached_by: list[int] | None = None
        routes: dict[int, list[IPNetwork]] = {}
        subnets: set[IPNetwork] = set()
        exits = 0
        for route in snapshot.routes:
            net = ipaddress.ip_network(route.prefix)
            if net.prefixlen == 0:
                if route.via_pk in self.bit:
                    exits |= 1 << self.bit[route.via_pk]
                continue
            subnets.add(net)
            # an exit node's default routes are not its addresses: as a rule's source, 0.0.0.0/0
            # would let every member's packets match (the filter sees addresses, not peers)
            if route.via_pk in self.bit:
                routes.setdefault(route.via_pk, []).append(net)
        self._routes = routes
        self.exits = exits  # member mask of the approved exit nodes
        self.full_mesh = self.isolated == 0 and (exits == 0 or self.internet_open)
        self._subnets = subnets
        self._internet: tuple[str, ...] | None = None
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
        Only the internet's protection decides (a rule to "internet", or none naming it under
        "allow"), not whether `a` may reach the exit node's own address; the exit node enforces
        it (node_policy)."""
        i, j = self.bit.get(a.pk), self.bit.get(exit_node.pk)
        if i is None or j is None or i == j:
            return False
        return bool((self.exits >> j) & 1 and (self.internet_users >> i) & 1)

    def may_talk(self, a: NodeRow, b: NodeRow) -> bool:
        """May `a` and `b` exchange anything, in either direction (a reply path needs the peer)?
        Using an exit node counts: its traffic and the replies cross between the two."""
        return (self.may_reach(a, b) or self.may_reach(b, a)
                or self.may_use_exit(a, b) or self.may_use_exit(b, a))

    def access(self, a: NodeRow, b: NodeRow) -> Access:
        """What member `a` may send member `b` (for people: "who can reach X")."""
        i, j = self.bit.get(a.pk), self.bit.get(b.pk)
        if i is None or j is None or i == j:
            return NOTHING
        if not (self.isolated >> j) & 1:
            return EVERYTHING
        return _combine((r.proto, r.ports) for r in self.rules if (r.src >> i) & 1 and (r.dst >> j) & 1)

    def internet_access(self, a: NodeRow) -> Access:
        """What member `a` may send to the internet through an exit node (nothing when the network
        has no approved exit node but `a` itself)."""
        i = self.bit.get(a.pk)
        if i is None or not self.exits & ~(1 << i):
            return NOTHING
        if self.internet_open:
            return EVERYTHING
        return _combine((r.proto, r.ports) for r in self.rules if r.internet and (r.src >> i) & 1)

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

    def internet(self) -> tuple[str, ...]:
        """The internet's prefixes: everything outside the overlay network and the approved subnet
        routes (computed once per view, when a map first needs it)."""
        if self._internet is None:
            overlay = {ipaddress.ip_network(f"{n.overlay_ip}/{self._prefix_len}", strict=False)
                       for n in self.members}
            self._internet = tuple(str(n) for n in complement(overlay | self._subnets))
        return self._internet

    def _internet_rules(self, sources: int) -> Iterator[tuple[int, str, tuple[PortRange, ...]]]:
        """(source mask within `sources`, protocol, ports) of what may go to the internet."""
        if self.internet_open:
            if sources:
                yield sources, "any", ()
            return
        for r in self.rules:
            if r.internet and r.src & sources:
                yield r.src & sources, r.proto, r.ports

    def node_policy(self, me: NodeRow) -> wire.Policy:
        """The policy section of `me`'s netmap (see the module docstring)."""
        i = self.bit.get(me.pk)
        if i is None:
            return wire.ALLOW_ALL
        me_bit = 1 << i
        isolated = bool(self.isolated & me_bit)
        is_exit = bool(self.exits & me_bit)
        if not isolated and not (is_exit and not self.internet_open):
            return wire.ALLOW_ALL
        hit = self._node_policies.get(i)
        if hit is not None:
            return hit
        own = self.prefixes(me_bit)
        rules = set()
        if isolated:
            for r in self.rules:
                if r.dst & me_bit and r.src & ~me_bit:
                    rules.add(wire.Rule(self.prefixes(r.src & ~me_bit), own, r.proto, r.ports))
                if r.src & me_bit and r.dst & ~me_bit:
                    rules.add(wire.Rule(own, self.prefixes(r.dst & ~me_bit), r.proto, r.ports))
        elif self.all & ~me_bit:  # an exit node that filters for the internet only
            rules.add(wire.Rule(self.prefixes(self.all & ~me_bit), own, "any", ()))
        open_ = self.all & ~self.isolated & ~me_bit
        if self.default == wire.ALLOW and open_:
            rules.add(wire.Rule(own, self.prefixes(open_), "any", ()))
        if is_exit:  # who may go through me to the internet
            for sources, proto, ports in self._internet_rules(self.all & ~me_bit):
                rules.add(wire.Rule(self.prefixes(sources), self.internet(), proto, ports))
        if self.exits & ~me_bit:  # what I may start through another exit node
            for _, proto, ports in self._internet_rules(me_bit):
                rules.add(wire.Rule(own, self.internet(), proto, ports))
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
