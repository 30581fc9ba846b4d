"""Which exit node this node uses, from its netmap and its own `up --exit-node`. Pure.

An approved exit node is a peer with default routes in the netmap (netmap.is_exit_route). A node
uses one only when it selects it: `up --exit-node NAME` (a peer's name, compared without regard to
case, or its peer id) wins over the operator's choice in the dashboard (`SelfInfo.use_exit`). It
uses only the default route of its overlay's family (an IPv4 overlay carries IPv4 to the internet;
the other family keeps the node's own routes), and none while it is an exit node itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.netmap import NetMap, is_exit_route

__all__ = ["DEFAULT_PREFIX", "ExitChoice", "choose_exit", "offers"]

DEFAULT_PREFIX = {4: "0.0.0.0/0", 6: "::/0"}


@dataclass(frozen=True, slots=True)
class ExitChoice:
    peer_id: str | None = None  # the exit node in use; None: the node's own routes
    name: str | None = None
    prefix: str | None = None  # the default route through it (the overlay's family)
    source: str = ""  # "flag" (up --exit-node), "dashboard" (use_exit) or ""
    problem: str = ""  # why a requested exit node is not used ("" when none is)


def offers(netmap: NetMap) -> dict[str, tuple[str, ...]]:
    """Approved exit nodes among the peers: peer id -> its default routes."""
    revoked = {r.peer_id for r in netmap.revoked}
    peers = {p.peer_id for p in netmap.peers if p.peer_id not in revoked}
    out: dict[str, tuple[str, ...]] = {}
    for r in netmap.routes:
        if is_exit_route(r) and r.via in peers:
            out[r.via] = (*out.get(r.via, ()), r.prefix)
    return out


def choose_exit(netmap: NetMap, requested: str | None, family: int) -> ExitChoice:
    """The exit node to use; `requested` is `up --exit-node` (None: the dashboard's choice)."""
    source = "flag" if requested else "dashboard" if netmap.node.use_exit else ""
    wanted = requested or netmap.node.use_exit
    if not wanted:
        return ExitChoice()
    if netmap.node.is_exit:
        return ExitChoice(source=source, problem="this node is an exit node itself")
    key = wanted.lower()
    peer = next((p for p in netmap.peers if p.peer_id == key), None)
    if peer is None:
        named = [p for p in netmap.peers if p.name.lower() == key]
        if len(named) > 1:
            return ExitChoice(source=source, problem=f"more than one peer is called {wanted!r}")
        peer = named[0] if named else None
    if peer is None:
        return ExitChoice(source=source, problem=f"no peer {wanted!r} in the netmap")
    prefix = DEFAULT_PREFIX[family]
    if prefix not in offers(netmap).get(peer.peer_id, ()):
        return ExitChoice(name=peer.name, source=source,
                          problem=f"{peer.name} is not an approved exit node (for {prefix})")
    return ExitChoice(peer.peer_id, peer.name, prefix, source)
