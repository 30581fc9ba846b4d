"""diff(applied NetMap, new NetMap) → the ordered actions that take the agent from one to the other. Pure.

Order (each step only relies on what earlier steps left in place):

    1. SetSelf       our own overlay address / flags changed
    2. RemoveRoute   routes that are gone, changed hop, or point at a peer that is leaving
    3. RemovePeer    peers gone from the map or revoked (revoked first, then the others) — sessions
                     torn down and keys wiped; a revoked peer is removed even if still listed
    4. AddPeer       new peers; relays before the peers reached through them
    5. UpdatePeer    endpoints, relay, flags or certificate changed (a new relay exists by now);
                     `reset_sessions` when the peer's identity changed under its peer id: its
                     overlay IP (the source address its sessions may use). A new key is a new
                     peer id (the id is the key's hash): RemovePeer + AddPeer. A new fingerprint
                     alone is a renewal (same key, id and address, another validity): live
                     sessions stay, and the next handshake presents the new certificate
    6. AddRoute      new routes, once their next-hop peer exists

`routing_table(netmap, exit_node)` builds the data path's table from the same map: every peer's
overlay IP as a host route to Hop(peer, via=its relay), and each netmap route to Hop(via, via's
relay). An exit node's default routes only go in for the exit node this node uses (`exit_node`,
routing/exits.py); then the same table lets that peer send from any address (the internet's
replies) and no other peer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..protocol.netmap import NetMap, Peer, Route, SelfInfo, is_exit_route
from .table import Hop, RouteTable

__all__ = [
    "Action",
    "AddPeer",
    "AddRoute",
    "RemovePeer",
    "RemoveRoute",
    "SetSelf",
    "UpdatePeer",
    "effective",
    "plan",
    "routing_table",
]


@dataclass(frozen=True, slots=True)
class SetSelf:
    node: SelfInfo


@dataclass(frozen=True, slots=True)
class RemoveRoute:
    route: Route


@dataclass(frozen=True, slots=True)
class RemovePeer:
    peer_id: str
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class UpdatePeer:
    old: Peer
    new: Peer
    reset_sessions: bool


@dataclass(frozen=True, slots=True)
class AddPeer:
    peer: Peer


@dataclass(frozen=True, slots=True)
class AddRoute:
    route: Route


Action = SetSelf | RemoveRoute | RemovePeer | UpdatePeer | AddPeer | AddRoute


def effective(netmap: NetMap | None) -> tuple[dict[str, Peer], set[Route]]:
    """The peers we may talk to (revoked ones dropped) and the routes whose hop is one of them."""
    if netmap is None:
        return {}, set()
    revoked = {r.peer_id for r in netmap.revoked}
    revoked.add(netmap.node.peer_id)  # never a peer of ourselves
    peers = {p.peer_id: p for p in netmap.peers if p.peer_id not in revoked}
    routes = {r for r in netmap.routes if r.via in peers}
    return peers, routes


def _relays_first(peers: list[Peer]) -> list[Peer]:
    """Order new peers so a relay comes before every peer that names it (ties by peer id)."""
    adding = {p.peer_id for p in peers}
    ordered: list[Peer] = []
    placed: set[str] = set()
    remaining = sorted(peers, key=lambda p: p.peer_id)
    while remaining:
        ready = [p for p in remaining if p.relay is None or p.relay not in adding or p.relay in placed]
        if not ready:  # a relay cycle (invalid map): keep a stable order rather than loop forever
            ready = remaining[:1]
        for p in ready:
            ordered.append(p)
            placed.add(p.peer_id)
        remaining = [p for p in remaining if p.peer_id not in placed]
    return ordered


def plan(applied: NetMap | None, new: NetMap) -> list[Action]:
    """The ordered actions that turn the applied map (None at start) into `new`."""
    old_peers, old_routes = effective(applied)
    new_peers, new_routes = effective(new)
    revoked_now = {r.peer_id for r in new.revoked}
    actions: list[Action] = []

    if applied is None or applied.node != new.node:
        actions.append(SetSelf(new.node))

    actions += [RemoveRoute(r) for r in sorted(old_routes - new_routes)]

    leaving = sorted(pid for pid in old_peers if pid not in new_peers)
    leaving.sort(key=lambda pid: pid not in revoked_now)  # revoked peers first (stable)
    actions += [RemovePeer(pid, revoked=pid in revoked_now) for pid in leaving]

    arriving = [p for pid, p in new_peers.items() if pid not in old_peers]
    actions += [AddPeer(p) for p in _relays_first(arriving)]

    for pid in sorted(new_peers):
        old, cur = old_peers.get(pid), new_peers[pid]
        if old is not None and old != cur:
            reset = old.overlay_ip != cur.overlay_ip  # not the fingerprint: renewals keep sessions
            actions.append(UpdatePeer(old, cur, reset))
    actions += [AddRoute(r) for r in sorted(new_routes - old_routes)]
    return actions


def routing_table(netmap: NetMap, exit_route: Route | None = None) -> RouteTable[Hop]:
    """The data path's longest-prefix table for a netmap (revoked peers excluded); `exit_route` is
    the default route of the exit node in use (routing/exits.py), None for none."""
    peers, routes = effective(netmap)
    entries: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Hop]] = []
    for p in peers.values():
        ip = ipaddress.ip_address(p.overlay_ip)
        entries.append((ipaddress.ip_network((ip, ip.max_prefixlen)), Hop(p.peer_id, p.relay)))
    for r in routes:
        if is_exit_route(r) and r != exit_route:
            continue
        entries.append((ipaddress.ip_network(r.prefix, strict=True), Hop(r.via, peers[r.via].relay)))
    return RouteTable.build(entries)
