"""The mesh's names as one node answers them, from its netmap. Pure: no sockets, no clock.

`MeshNames.from_netmap(netmap)` is the name table: every node of the map (ourselves and each peer)
whose name is a DNS label (protocol/dnsname.py) answers to `<name>.<suffix>` with its overlay
address. A label two nodes share (names enrolled before names were unique) answers for neither:
an ambiguous name is refused rather than guessed. The table is rebuilt with every netmap, so a
renamed node's name follows at the next push.

`decide(names, qname, qtype, qclass, from_self=, can_forward=)` is what one question gets:

    under the suffix    A/AAAA of the node (others: no data), NXDOMAIN for a name no node has
    anything else       forwarded to the resolver the node had (only for the node's own
                        queries, and only when it had one), else REFUSED

The agent is no open resolver: its peers get the mesh's names from it, never recursion.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..protocol.dnsname import fold, is_label
from ..protocol.netmap import NetMap

__all__ = [
    "CLASS_IN", "TYPE_A", "TYPE_AAAA", "TYPE_ANY", "Answer", "Decision", "Forward", "MeshNames",
    "NameError_", "NoData", "Refused", "decide",
]

TYPE_A, TYPE_AAAA, TYPE_ANY = 1, 28, 255
CLASS_IN = 1
TTL_S = 30  # short: a rename or a new address reaches askers soon


@dataclass(frozen=True, slots=True)
class Answer:
    """Address records for the question's name (authoritative)."""

    addresses: tuple[str, ...]
    ttl: int = TTL_S


@dataclass(frozen=True, slots=True)
class NoData:
    """The name exists under the suffix, but has no record of that type (authoritative)."""


@dataclass(frozen=True, slots=True)
class NameError_:
    """NXDOMAIN: no node has this name (authoritative)."""


@dataclass(frozen=True, slots=True)
class Forward:
    """Ask the resolver the node had."""


@dataclass(frozen=True, slots=True)
class Refused:
    why: str


Decision = Answer | NoData | NameError_ | Forward | Refused


@dataclass(frozen=True, slots=True)
class MeshNames:
    suffix: str | None = None  # folded; None: the network has no DNS names
    table: dict[str, str] = field(default_factory=dict)  # folded label -> overlay address
    ambiguous: frozenset[str] = frozenset()  # labels more than one node has
    skipped: tuple[str, ...] = ()  # names that are not DNS labels

    @classmethod
    def from_netmap(cls, netmap: NetMap) -> MeshNames:
        """The table of a netmap (nodeagent.protocol.netmap.NetMap): our node and every peer."""
        suffix = netmap.node.dns_suffix
        if suffix is None:
            return cls()
        table: dict[str, str] = {}
        ambiguous: set[str] = set()
        skipped: list[str] = []
        revoked = {r.peer_id for r in netmap.revoked}
        nodes = [(netmap.node.name, netmap.node.overlay_ip)]
        nodes += [(p.name, p.overlay_ip) for p in netmap.peers if p.peer_id not in revoked]
        for name, address in nodes:
            if not is_label(name):
                skipped.append(name)
                continue
            label = fold(name)
            if label in table and table[label] != address:
                ambiguous.add(label)
            table[label] = address
        for label in ambiguous:
            del table[label]
        return cls(fold(suffix), table, frozenset(ambiguous), tuple(skipped))

    def name_of(self, label: str) -> str | None:
        """`<label>.<suffix>` (the full name a node answers to), None without a suffix."""
        return None if self.suffix is None else f"{label}.{self.suffix}"

    def under_suffix(self, qname: str) -> str | None:
        """The part of `qname` before the suffix ("" for the suffix itself), None when the name is
        not under the suffix."""
        if self.suffix is None:
            return None
        name = fold(qname)
        if name == self.suffix:
            return ""
        if name.endswith("." + self.suffix):
            return name[: -len(self.suffix) - 1]
        return None


def decide(names: MeshNames, qname: str, qtype: int, qclass: int, *, from_self: bool,
           can_forward: bool) -> Decision:
    """What a query for (qname, qtype, qclass) gets (module docstring)."""
    rest = names.under_suffix(qname)
    if rest is None:
        if from_self and can_forward:
            return Forward()
        return Refused("not a mesh name" if can_forward or not from_self else "no resolver to forward to")
    if qclass != CLASS_IN:
        return Refused("only class IN")
    if rest == "":
        return NoData()  # the suffix itself: exists (it holds the names), no addresses
    if rest in names.ambiguous:
        return Refused("a name more than one node has")
    address = names.table.get(rest)
    if address is None:
        return NameError_()
    version = ipaddress.ip_address(address).version
    wanted = {TYPE_A: 4, TYPE_AAAA: 6}.get(qtype)
    if qtype == TYPE_ANY or wanted == version:
        return Answer((address,))
    return NoData()
