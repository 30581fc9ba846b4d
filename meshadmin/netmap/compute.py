"""Pure: netmap_for(snapshot, node) -> nodeagent.protocol.netmap.NetMap. No database, no clock.

For one node: the peers it may talk to under the access policy (policy.py: identity, overlay IP,
certificate fingerprint, endpoints, flags, fallback relay; relays always), the routes through the
peers it may talk to (an approved exit node's default routes only when the policy lets it use the
exit node), the relays, the revocation list (every revoked node of the network, by peer id and
certificate fingerprint) and its access policy (what may reach it, what it may reach). Its own
entry carries the network's DNS suffix, whether it is an approved exit node, and the exit node an
operator chose for it.
A view may also carry the CA's signed revocation list for the DHT (`with_revocation_list`, made
by the caller that holds the CA key: revocations.py), which every map of the view then carries.

Cost: a full mesh of N nodes has N maps of N-1 peers each. `NetworkView` does the per-node work
once (one `Peer` per node, shared by every map that lists it), so a node's map is a filter over
shared objects; only a relay viewing a peer whose preferred relay is itself gets its own copy.
The access policy is resolved once per view too (policy.AccessPolicy: bit masks of members).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from nodeagent.protocol import netmap as nm

from . import policy

if TYPE_CHECKING:  # types only: this module never touches the database
    from .snapshot import NodeRow, Snapshot

__all__ = [
    "Changes", "NetworkView", "NodeNotInNetwork", "changes", "delta_for", "netmap_for", "netmaps_for_all",
    "view",
]


class NodeNotInNetwork(LookupError):
    """The node is not an active member of the snapshot's network."""


MAX_ENDPOINTS = 16  # per peer: the reported endpoint, the observed address, UDP candidates


def _endpoints(n: NodeRow) -> tuple[nm.Endpoint, ...]:
    """The reported endpoint first (peers dial it), the address the server saw the agent come
    from, then the UDP candidates the agent reported (local, reflexive), without repeats."""
    if n.endpoint_ip is None or n.control_port is None or n.udp_port is None:
        return ()
    out = [nm.Endpoint(n.endpoint_ip, n.control_port, n.udp_port, "reported")]
    if n.observed_ip and n.observed_ip != n.endpoint_ip:
        out.append(nm.Endpoint(n.observed_ip, n.control_port, n.udp_port, "observed"))
    seen = {(e.ip, e.udp_port) for e in out}
    for source, ip, port in n.candidates:
        if (ip, port) not in seen and len(out) < MAX_ENDPOINTS:
            seen.add((ip, port))
            out.append(nm.Endpoint(ip, n.control_port, port, source))
    return tuple(out)


def _overlay_ip(n: NodeRow) -> str:
    """The overlay address of a member (members and the map's own node always have one)."""
    if n.overlay_ip is None:
        raise NodeNotInNetwork(f"{n.peer_id} has no overlay address")
    return n.overlay_ip


def _fingerprint(n: NodeRow) -> str:
    return n.fingerprint or "0" * 64


@dataclass(frozen=True, slots=True)
class NetworkView:
    """Everything shared by the maps of one snapshot, computed once."""

    snapshot: Snapshot
    members: tuple[NodeRow, ...]             # active nodes with an overlay address, by peer id
    peers: dict[int, nm.Peer]                # node pk -> its Peer entry (relay hint for most viewers)
    second_relay: dict[int, str | None]      # node pk -> relay hint when the viewer is the first choice
    relays: tuple[NodeRow, ...]
    routes: tuple[tuple[str, int], ...]      # (prefix, via pk)
    revoked: tuple[nm.Revocation, ...]
    index: dict[str, NodeRow]                # peer id -> row, every node of the snapshot
    access: policy.AccessPolicy              # who may reach whom, and each member's policy section
    exits: frozenset[int] = frozenset()      # pks of approved exit nodes (default routes via them)
    ordered: tuple[nm.Peer, ...] = ()        # the members' Peer entries, in `members` order
    position: dict[int, int] = field(default_factory=dict)  # member pk -> its place in `members`
    revocation_list: bytes | None = None     # the CA's signed list for the DHT (revocations.py)
    # the first two relays of policy.rank_relays, by peer id: every non-relay member's relay hint
    # and second_relay (policy.relay_choices)
    relay_order: tuple[str, ...] = ()

    def with_revocation_list(self, raw: bytes | None) -> NetworkView:
        return replace(self, revocation_list=raw)

    def netmap_for(self, node: NodeRow | str | int) -> nm.NetMap:
        snap = self.snapshot
        me: NodeRow | None
        if isinstance(node, str):
            me = self.index.get(node)
        elif isinstance(node, int):
            me = snap.node(node)
        else:
            me = node
        if me is None or not me.active or me.overlay_ip is None:
            raise NodeNotInNetwork(f"{node!r} is not an active node of {snap.network!r}")
        k = self.position.get(me.pk)
        if self.access.full_mesh and k is not None and not policy.is_relay_candidate(me):
            # the full mesh seen by a node that relays for nobody: every other member, each with
            # its shared entry (no relay hint names this node), in member order; two slices
            # instead of asking the policy N times (what a server does on every connect)
            return self._map(me, self.ordered[:k] + self.ordered[k + 1:], self._member_routes(me))
        peers = []
        reachable: dict[int, NodeRow] = {}
        access = self.access
        me_relay = policy.is_relay_candidate(me)
        for n in self.members:
            if n.pk == me.pk:
                continue
            talks = access.may_talk(me, n)
            if not (talks or me_relay or policy.is_relay_candidate(n)):
                continue  # a relay carries relayed frames for everyone, whatever the policy
            p = self.peers[n.pk]
            if p.relay == me.peer_id:
                p = replace(p, relay=self.second_relay[n.pk])
            peers.append(p)
            if talks:
                reachable[n.pk] = n
        routes = tuple(sorted({nm.Route(prefix, reachable[via].peer_id) for prefix, via in self.routes
                               if via in reachable and (not _is_default(prefix)
                                                        or access.may_use_exit(me, reachable[via]))}))
        return self._map(me, tuple(peers), routes)

    def self_info(self, me: NodeRow) -> nm.SelfInfo:
        """A member's own entry: its identity and flags, the DNS suffix, its exit-node role and the
        exit node chosen for it (only an approved one it may reach and use)."""
        snap = self.snapshot
        use_exit = None
        chosen = snap.node(me.use_exit_pk) if me.use_exit_pk is not None else None
        if (chosen is not None and chosen.pk in self.exits and chosen.pk in self.peers
                and self.access.may_use_exit(me, chosen)):
            use_exit = chosen.peer_id
        return nm.SelfInfo(peer_id=me.peer_id, name=me.name, overlay_ip=_overlay_ip(me),
                           prefix_len=snap.prefix_len, is_public=me.is_public,
                           is_relay=policy.is_relay_candidate(me), dns_suffix=snap.dns_suffix,
                           is_exit=me.pk in self.exits, use_exit=use_exit)

    def _member_routes(self, me: NodeRow) -> tuple[nm.Route, ...]:
        """The routes of netmap_for when `me` reaches every other member: every route not via
        itself, a default route only through an exit node it may use."""
        return tuple(sorted({nm.Route(prefix, self.peers[via].peer_id) for prefix, via in self.routes
                             if via in self.peers and via != me.pk
                             and (not _is_default(prefix)
                                  or self.access.may_use_exit(me, self.members[self.position[via]]))}))

    def routes_for(self, me_pk: int) -> tuple[nm.Route, ...]:
        """The routes a member sees under the full-mesh policy (every route not via itself)."""
        return tuple(sorted({nm.Route(prefix, self.peers[via].peer_id) for prefix, via in self.routes
                             if via in self.peers and via != me_pk}))

    def _map(self, me: NodeRow, peers: tuple[nm.Peer, ...], routes: tuple[nm.Route, ...]) -> nm.NetMap:
        snap = self.snapshot
        return nm.NetMap(
            network=snap.network,
            serial=snap.serial,
            node=self.self_info(me),
            peers=peers,
            routes=routes,
            relays=tuple(r.peer_id for r in self.relays if r.pk != me.pk),
            revoked=self.revoked,
            policy=self.access.node_policy(me),
            revocation_list=self.revocation_list,
        )


def _is_default(prefix: str) -> bool:
    return nm.is_exit_route(nm.Route(prefix, ""))


def view(snapshot: Snapshot) -> NetworkView:
    members = tuple(sorted((n for n in snapshot.nodes if policy.is_member(n)), key=lambda n: n.peer_id))
    relays = [n for n in snapshot.nodes if policy.is_relay_candidate(n)]
    ranked = policy.rank_relays(relays)
    peers, second = {}, {}
    for n in members:
        first, other = policy.relay_choices(n, ranked)
        endpoints = _endpoints(n)
        peers[n.pk] = nm.Peer(peer_id=n.peer_id, name=n.name, overlay_ip=_overlay_ip(n),
                              fingerprint=_fingerprint(n), endpoints=endpoints, is_public=n.is_public,
                              is_relay=policy.is_relay_candidate(n), relay=first, online=bool(endpoints))
        second[n.pk] = other
    return NetworkView(
        snapshot=snapshot,
        members=members,
        peers=peers,
        second_relay=second,
        relays=tuple(sorted(relays, key=lambda r: r.peer_id)),
        routes=tuple((r.prefix, r.via_pk) for r in snapshot.routes),
        revoked=tuple(sorted(nm.Revocation(n.peer_id, _fingerprint(n)) for n in snapshot.nodes
                             if not n.active)),
        index={n.peer_id: n for n in snapshot.nodes},
        access=policy.access_policy(snapshot, members),
        exits=frozenset(r.via_pk for r in snapshot.routes if _is_default(r.prefix)
                        and (row := snapshot.node(r.via_pk)) is not None and row.active),
        ordered=tuple(peers[n.pk] for n in members),
        position={n.pk: i for i, n in enumerate(members)},
        relay_order=tuple(r.peer_id for r in ranked[:2]),
    )


def netmap_for(snapshot: Snapshot | NetworkView, node: NodeRow | str | int) -> nm.NetMap:
    v = snapshot if isinstance(snapshot, NetworkView) else view(snapshot)
    return v.netmap_for(node)


def netmaps_for_all(snapshot: Snapshot | NetworkView) -> dict[str, nm.NetMap]:
    """Every active node's map, keyed by peer id."""
    v = snapshot if isinstance(snapshot, NetworkView) else view(snapshot)
    return {n.peer_id: v.netmap_for(n) for n in v.members}


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed between two views of a network, once for all its members."""

    upsert: dict[int, nm.Peer]   # node pk -> new Peer entry (new or changed), by peer id order
    remove: dict[int, str]       # node pk -> peer id of members that left
    relays_changed: bool
    revoked_changed: bool
    prefix_changed: bool
    revocation_list_changed: bool = False


def changes(old: NetworkView, new: NetworkView) -> Changes:
    upsert = {pk: p for pk, p in sorted(new.peers.items(), key=lambda kv: kv[1].peer_id)
              if old.peers.get(pk) != p}
    remove = {pk: p.peer_id for pk, p in old.peers.items() if pk not in new.peers}
    return Changes(
        upsert=upsert,
        remove=remove,
        relays_changed=[r.peer_id for r in old.relays] != [r.peer_id for r in new.relays],
        revoked_changed=old.revoked != new.revoked,
        prefix_changed=old.snapshot.prefix_len != new.snapshot.prefix_len,
        revocation_list_changed=old.revocation_list != new.revocation_list,
    )


def delta_for(old: NetworkView, new: NetworkView, ch: Changes, peer_id: str) -> nm.NetMapDelta | None:
    """The delta from `peer_id`'s map in `old` to its map in `new`, built from the shared change set
    in O(size of the change); None when this node needs the general path (netmap_for + diff): its
    own entry changed, the access policy is not the full mesh in either view (then peers and
    policy sections differ per node), or it is a relay and the relay ranking changed. Its own
    entry (SelfInfo) is sent when it changed (the DNS suffix, its exit-node role, the exit node
    chosen for it).

    A relay sees the shared entries except that a member whose relay hint names the relay itself
    carries its second choice instead (NetworkView.netmap_for). Every non-relay member's hints are
    the first two of the ranking, so while the ranking stays, an entry that did not change does
    not change as the relay sees it either: the relay's delta is the shared one with those hints
    swapped in the changed entries, not two walks over every member."""
    me = new.index.get(peer_id)
    if not (old.access.full_mesh and new.access.full_mesh) or ch.prefix_changed or me is None \
            or me.pk not in new.peers:
        return None
    before = old.peers.get(me.pk)
    if before is None or me.pk in ch.upsert:
        return None
    relay = policy.is_relay_candidate(me)  # == before.is_relay: its own entry did not change
    if relay and old.relay_order != new.relay_order:
        return None
    me_before = old.index.get(peer_id)
    if me_before is None or me_before.pk not in old.peers:
        return None
    self_before, self_now = old.self_info(me_before), new.self_info(me)
    old_routes, new_routes = old.routes_for(me.pk), new.routes_for(me.pk)
    upsert = tuple((replace(p, relay=new.second_relay[pk]) if relay and p.relay == peer_id else p)
                   for pk, p in ch.upsert.items() if pk != me.pk)
    return nm.NetMapDelta(
        network=new.snapshot.network,
        base_serial=old.snapshot.serial,
        serial=new.snapshot.serial,
        node=None if self_before == self_now else self_now,
        upsert=upsert,
        remove=tuple(sorted(pid for pk, pid in ch.remove.items() if pk != me.pk)),
        routes=None if old_routes == new_routes else new_routes,
        relays=tuple(r.peer_id for r in new.relays if r.pk != me.pk) if ch.relays_changed else None,
        revoked=new.revoked if ch.revoked_changed else None,
        revocation_list=new.revocation_list if ch.revocation_list_changed else None,
    )
