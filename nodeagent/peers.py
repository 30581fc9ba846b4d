"""The peer set: which peers this node has, fixed in serverless mode, live in enrolled mode.

`PeerSet` owns the list of `Peer` objects the data path reads (the same list object as
`DataPath.peers`), the by-id index (ours, and the data path's by id bytes) and the data path's
routing table. Every other piece of per-peer state lives with its owner, which hears about a
change through the `PeerListener` calls, in the order the listeners were registered:

    add(pc)                 1. a new Peer joins the list and both indexes
                            2. listeners: peer_added(peer)
                            3. the routing table is rebuilt
    remove(pid, revoked)    1. the Peer leaves the list and both indexes
                            2. listeners: peer_removed(peer, revoked) (the handshake driver,
                               registered first, puts a revoked peer on the CA's revocation
                               list before any link is closed)
                            3. its parked packets are dropped and its keys wiped
                            4. the routing table is rebuilt
    update(pc, reset)       1. the Peer gets the new config; with `reset` (its certificate or
                               overlay IP changed) its keys are wiped: they were
                               authenticated under the old identity
                            2. listeners: peer_changed(peer, old_config, reset)
                            3. the routing table is rebuilt

Everything runs on the event-loop thread; nothing here awaits.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .config import PeerConfig
from .routing.table import RouteConflict, RouteTable
from .tunnel.datapath import DataPath, Peer

__all__ = ["PeerListener", "PeerSet"]

log = logging.getLogger(__name__)


class PeerListener(Protocol):
    """An owner of per-peer state, told about every change of the peer set."""

    def peer_added(self, peer: Peer) -> None: ...

    def peer_removed(self, peer: Peer, revoked: bool) -> None: ...

    def peer_changed(self, peer: Peer, old_config: PeerConfig, reset_sessions: bool) -> None: ...


class PeerSet:
    def __init__(self, datapath: DataPath, relay_rate_pps: float) -> None:
        self.datapath = datapath
        self.relay_rate_pps = relay_rate_pps
        self.peers: list[Peer] = datapath.peers  # the same list object the data path reads
        self.by_id: dict[str, Peer] = {}
        self.listeners: list[PeerListener] = []

    def get(self, peer_id: str) -> Peer | None:
        return self.by_id.get(peer_id)

    def __iter__(self):
        return iter(self.peers)

    def __len__(self) -> int:
        return len(self.peers)

    def __contains__(self, peer: object) -> bool:
        return peer in self.peers

    # --- changes ----------------------------------------------------------------------------
    def add(self, pc: PeerConfig) -> Peer:
        peer = Peer(pc, self.relay_rate_pps)
        pid = pc.peer_id
        self.peers.append(peer)
        self.by_id[pid] = peer
        self.datapath.by_id[peer.id_bytes] = peer
        for listener in self.listeners:
            listener.peer_added(peer)
        self.rebuild_table()
        log.info("peer %s (%s, %s) added%s", pc.name, pid[:8], pc.overlay_ip,
                 f", relay {pc.via[:8]}" if pc.via else "", extra={"event": "peer.added", "peer_id": pid})
        return peer

    def remove(self, pid: str, revoked: bool = False) -> None:
        """Close the peer's link, wipe its keys, drop its sessions and routes (through the
        listeners). A revoked peer cannot handshake again: the handshake driver revokes it."""
        peer = self.by_id.pop(pid, None)
        if peer is None:
            return
        self.peers.remove(peer)
        self.datapath.by_id.pop(peer.id_bytes, None)
        for listener in self.listeners:
            listener.peer_removed(peer, revoked)
        peer.pending.clear()
        self.datapath.drop_sessions(peer)
        self.rebuild_table()
        log.info("peer %s (%s) %s", peer.config.name, pid[:8], "REVOKED: dropped" if revoked else "removed",
                 extra={"event": "peer.revoked" if revoked else "peer.removed", "peer_id": pid})

    def update(self, pc: PeerConfig, reset_sessions: bool = False) -> None:
        """New endpoint, relay, name or routes for a known peer; `reset_sessions` when its identity
        (certificate or overlay IP) changed: live sessions were authenticated under the old one."""
        peer = self.by_id.get(pc.peer_id)
        if peer is None:
            return
        old = peer.config
        peer.config = pc
        if reset_sessions:
            self.datapath.drop_sessions(peer)
        for listener in self.listeners:
            listener.peer_changed(peer, old, reset_sessions)
        self.rebuild_table()
        log.info("peer %s (%s) updated%s", pc.name, pc.peer_id[:8],
                 ", sessions reset" if reset_sessions else "",
                 extra={"event": "peer.updated", "peer_id": pc.peer_id})

    def rebuild_table(self, hops=None) -> None:
        """Swap the data path's routing table for one built from the current peer set, or (enrolled)
        from routing.plan.routing_table(netmap) with its hops resolved to our Peer objects."""
        try:
            if hops is None:
                table = RouteTable.build((net, p) for p in self.peers for net in p.config.routed)
            else:
                table = RouteTable.build((net, self.by_id[hop.peer_id]) for net, hop in hops.routes()
                                         if hop.peer_id in self.by_id)
        except RouteConflict as exc:
            log.error("routing table not changed: %s", exc)
            return
        self.datapath.table = table
        self.datapath.route = table.lookup_packed
