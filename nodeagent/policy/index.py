"""The policy's rules compiled into a lookup: may this (src, dst, protocol, port) pass? Pure.

`RuleIndex.build(rules)` turns the rules of a `protocol.policy.Policy` into two levels of
longest-prefix tables (routing.table.RouteTable, the same structure that routes packets):

    destination address -> a table of source prefixes -> {protocol: ports}

Rules only allow, so a packet passes when any rule matches it. A longest-prefix match finds one
entry per level, so every entry is built to hold everything the shorter prefixes around it allow
("pushed down"): a destination prefix gets the source entries of every destination prefix that
contains it, and a source prefix the protocols and ports of every source prefix that contains
it, within the same table. A lookup is then two dict probes per level at most (host prefixes
in one dict, the other lengths one probe each), a dict probe for the protocol and a set probe
or a short scan of ranges for the port. Tables with equal contents are shared.

Protocol numbers: "tcp" 6, "udp" 17, "icmp" 1 and 58 (ICMPv6), "any" every protocol. A port is
the destination port of TCP and UDP; `None` (no port: another protocol) matches only rules that
name no ports.

`RuleIndex.allows` is called once per new flow (nodeagent/policy/filter.py keeps the flows);
`RuleIndex.reaches` (whether any packet at all may go from one address to another) once per
peer learned outside the netmap (nodeagent/discovery/peering.py). tests/nodeagent/policy/
test_index.py checks both against a linear scan of the rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..protocol.policy import Rule
from ..routing.table import RouteTable
from .packet import ICMP, ICMPV6, TCP, UDP

__all__ = ["ANY_PROTOCOL", "PROTOCOL_NUMBERS", "Ports", "Protocols", "RuleIndex"]

ANY_PROTOCOL = 0  # key of "any" in a protocol map (0 is IPv6 hop-by-hop, never a transport)
PROTOCOL_NUMBERS: dict[str, tuple[int, ...]] = {
    "any": (ANY_PROTOCOL,), "tcp": (TCP,), "udp": (UDP,), "icmp": (ICMP, ICMPV6)}
_SMALL_RANGE = 64  # ranges up to this many ports are expanded into the set

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PortRange = tuple[int, int]


class Ports:
    """A set of destination ports: every port, or single ports (a set) plus wide ranges."""

    __slots__ = ("every", "ranges", "singles")

    def __init__(self, ranges: Iterable[PortRange]) -> None:
        spans = sorted(set(ranges))
        self.every = not spans  # no ranges: every port
        singles: set[int] = set()
        wide: list[PortRange] = []
        for lo, hi in spans:
            if hi - lo < _SMALL_RANGE:
                singles.update(range(lo, hi + 1))
            else:
                wide.append((lo, hi))
        self.singles = frozenset(singles)
        self.ranges = tuple(wide)

    def match(self, port: int | None) -> bool:
        if self.every:
            return True
        if port is None:
            return False
        if port in self.singles:
            return True
        return any(lo <= port <= hi for lo, hi in self.ranges)


_EVERY = Ports(())

# what one (destination prefix, source prefix) cell allows: protocol -> port ranges, with () for
# every port (and nothing else once one rule allows every port)
Cell = dict[int, set[PortRange] | None]


def _add(cell: Cell, proto: int, ports: Iterable[PortRange]) -> None:
    spans = tuple(ports)
    if not spans:
        cell[proto] = None  # every port, whatever else was there
    elif proto not in cell:
        cell[proto] = set(spans)
    else:
        held = cell[proto]
        if held is not None:
            held.update(spans)


def _merge(into: Cell, other: Cell) -> None:
    for proto, ports in other.items():
        _add(into, proto, () if ports is None else ports)


class Protocols:
    """What one source prefix may send to one destination prefix: protocol -> Ports."""

    __slots__ = ("by_proto", "signature")

    def __init__(self, cell: Cell) -> None:
        if ANY_PROTOCOL in cell:
            cell = {ANY_PROTOCOL: None}  # "any" rules name no ports: everything passes
        self.by_proto = {proto: _EVERY if ports is None else Ports(ports) for proto, ports in cell.items()}
        self.signature = tuple(sorted((proto, None if ports is None else tuple(sorted(ports)))
                                      for proto, ports in cell.items()))

    def match(self, proto: int, dport: int | None) -> bool:
        ports = self.by_proto.get(ANY_PROTOCOL)
        if ports is None:
            ports = self.by_proto.get(proto)
            if ports is None:
                return False
        return ports.match(dport)


def _covering(net: IPNetwork, present: dict[int, set[IPNetwork]]) -> list[IPNetwork]:
    """The prefixes of `present` (prefix length -> prefixes) that contain `net`, itself included."""
    out = []
    for plen, nets in present.items():
        if plen <= net.prefixlen:
            candidate = net.supernet(new_prefix=plen) if plen < net.prefixlen else net
            if candidate in nets:
                out.append(candidate)
    return out


def _by_length(nets: Iterable[IPNetwork]) -> dict[int, set[IPNetwork]]:
    out: dict[int, set[IPNetwork]] = {}
    for n in nets:
        out.setdefault(n.prefixlen, set()).add(n)
    return out


class RuleIndex:
    """The compiled rules; build with `RuleIndex.build`, ask with `allows`."""

    __slots__ = ("rule_count", "table")

    def __init__(self, table: RouteTable[RouteTable[Protocols]], rule_count: int) -> None:
        self.table = table  # destination prefix -> RouteTable(source prefix -> {proto: Ports})
        self.rule_count = rule_count

    @classmethod
    def build(cls, rules: Iterable[Rule]) -> RuleIndex:
        rules = list(rules)
        cells: dict[IPNetwork, dict[IPNetwork, Cell]] = {}
        for r in rules:
            protos = PROTOCOL_NUMBERS[r.proto]
            srcs = [ipaddress.ip_network(s) for s in r.src]
            for d in r.dst:
                dnet = ipaddress.ip_network(d)
                row = cells.setdefault(dnet, {})
                for snet in srcs:
                    if snet.version != dnet.version:
                        continue  # no packet has an IPv4 source and an IPv6 destination
                    target = row.setdefault(snet, {})
                    for proto in protos:
                        _add(target, proto, r.ports)
        by_dst = _by_length(cells)
        shared: dict[tuple[object, ...], RouteTable[Protocols]] = {}
        entries: list[tuple[IPNetwork, RouteTable[Protocols]]] = []
        for dnet in cells:
            # every source entry of every destination prefix around this one (itself included)
            merged: dict[IPNetwork, Cell] = {}
            for outer in _covering(dnet, by_dst):
                for snet, outer_cell in cells[outer].items():
                    _merge(merged.setdefault(snet, {}), outer_cell)
            by_src = _by_length(merged)
            pushed: dict[IPNetwork, Protocols] = {}
            for snet in merged:
                cell: Cell = {}
                for outer in _covering(snet, by_src):
                    _merge(cell, merged[outer])
                pushed[snet] = Protocols(cell)
            key = tuple(sorted((str(s), c.signature) for s, c in pushed.items()))
            table = shared.get(key)
            if table is None:
                table = shared[key] = RouteTable.build(pushed.items())
            entries.append((dnet, table))
        return cls(RouteTable.build(entries), len(rules))

    def allows(self, src: bytes, dst: bytes, proto: int, dport: int | None) -> bool:
        """Whether some rule allows a packet from `src` to `dst` (packed, 4 or 16 bytes) with
        protocol number `proto` and destination port `dport` (None: the protocol has none)."""
        sources = self.table.lookup_packed(dst)
        if sources is None:
            return False
        protos = sources.lookup_packed(src)
        return protos is not None and protos.match(proto, dport)

    def reaches(self, src: bytes, dst: bytes) -> bool:
        """Whether some rule allows any packet at all (some protocol, some port) from `src` to
        `dst` (packed, 4 or 16 bytes). Every cell of the table holds at least one protocol, and a
        cell holds what every rule around it allows (pushed down), so finding one is the answer."""
        sources = self.table.lookup_packed(dst)
        return sources is not None and sources.lookup_packed(src) is not None
