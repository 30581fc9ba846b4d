"""Pure: netmap_for(snapshot, node) -> nodeagent.protocol.netmap.NetMap. No database, no clock.

For one node: the peers it may reach (identity, overlay IP, certificate fingerprint, endpoints,
flags, fallback relay), the routes through those peers, the relays, and the revocation list
(every revoked node of the network, by peer id and certificate fingerprint).
"""

from __future__ import annotations

from nodeagent.protocol import netmap as nm

from . import policy
from .snapshot import NodeRow, Snapshot

__all__ = ["NodeNotInNetwork", "netmap_for", "netmaps_for_all"]


class NodeNotInNetwork(LookupError):
    """The node is not an active member of the snapshot's network."""


def _endpoints(n: NodeRow) -> tuple[nm.Endpoint, ...]:
    if n.endpoint_ip is None or n.control_port is None or n.udp_port is None:
        return ()
    out = [nm.Endpoint(n.endpoint_ip, n.control_port, n.udp_port, "reported")]
    if n.observed_ip and n.observed_ip != n.endpoint_ip:
        out.append(nm.Endpoint(n.observed_ip, n.control_port, n.udp_port, "observed"))
    return tuple(out)


def _fingerprint(n: NodeRow) -> str:
    return n.fingerprint or "0" * 64


def netmap_for(snapshot: Snapshot, node: NodeRow | str | int) -> nm.NetMap:
    me = node if isinstance(node, NodeRow) else snapshot.node(node)
    if me is None or not me.active or me.overlay_ip is None:
        raise NodeNotInNetwork(f"{node!r} is not an active node of {snapshot.network!r}")
    relays = [n for n in snapshot.nodes if policy.is_relay_candidate(n)]
    reachable = {n.pk: n for n in snapshot.nodes if policy.may_reach(me, n)}
    peers = tuple(
        nm.Peer(peer_id=n.peer_id, name=n.name, overlay_ip=n.overlay_ip, fingerprint=_fingerprint(n),
                endpoints=_endpoints(n), is_public=n.is_public, is_relay=policy.is_relay_candidate(n),
                relay=policy.fallback_relay(me, n, relays), online=bool(_endpoints(n)))
        for n in reachable.values())
    routes = tuple(sorted({nm.Route(r.prefix, reachable[r.via_pk].peer_id)
                           for r in snapshot.routes if r.via_pk in reachable}))
    return nm.NetMap(
        network=snapshot.network,
        serial=snapshot.serial,
        node=nm.SelfInfo(peer_id=me.peer_id, name=me.name, overlay_ip=me.overlay_ip,
                         prefix_len=snapshot.prefix_len, is_public=me.is_public,
                         is_relay=policy.is_relay_candidate(me)),
        peers=tuple(sorted(peers, key=lambda p: p.peer_id)),
        routes=routes,
        relays=tuple(sorted(r.peer_id for r in relays if r.pk != me.pk)),
        revoked=tuple(sorted(nm.Revocation(n.peer_id, _fingerprint(n)) for n in snapshot.nodes
                             if not n.active)),
    )


def netmaps_for_all(snapshot: Snapshot) -> dict[str, nm.NetMap]:
    """Every active node's map, keyed by peer id."""
    return {n.peer_id: netmap_for(snapshot, n) for n in snapshot.nodes
            if n.active and n.overlay_ip is not None}
