"""The netmap: what one node must know of its mesh, its deltas and its plain-data form. Pure.

meshadmin computes one `NetMap` per node (meshadmin/netmap/compute.py) and pushes it, or a
`NetMapDelta` from the map the socket last got, over the agent websocket (messages.py carries
them); the agent applies it (kernel routes, peers, revocations) and persists it as plain data.
The netmap carries certificate fingerprints, not certificates: full certificates travel in the
peer handshake, so a push stays small. Its `policy` (policy.py) says what may reach the node and
what it may reach; the agent enforces it on its inbound packets (nodeagent/policy/).

Serials: `NetMap.serial` is the network serial the map was computed at. A delta names the serial
it applies on (`base_serial`); `apply_delta` refuses any other base (`SerialGap`) and the agent then
asks for a full map. A map or delta older than the applied one is ignored (`is_stale`).

The plain-data form (`netmap_to_dict`, also the golden-file and persisted form) holds only
str/int/bool/list/dict/None. Parsing it back is strict (strict.py): unknown keys, missing keys,
wrong types, out-of-range numbers, bad addresses or peer ids raise `strict.Malformed`.

`revocation_list` is the network CA's signed revocation list as a DHT record
(nodeagent/discovery/records.py, type 2), so agents can store and spread it in the DHT while the
server is away. It is optional: present (base64 in the plain-data form) only when the server has
one; in a delta, absent means unchanged. The map's own signature covers it; the agent verifies the
record's CA signature again before it uses it (docs/dht.md).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass, replace

from .dnsname import is_suffix
from .policy import ALLOW_ALL, Policy, policy_from_dict, policy_to_dict
from .strict import Malformed, StrictMap, check_fingerprint, check_ip, check_peer_id

__all__ = [
    "ENDPOINT_SOURCES",
    "MAX_REVOCATION_LIST",
    "Endpoint",
    "NetMap",
    "NetMapDelta",
    "Peer",
    "Revocation",
    "Route",
    "SelfInfo",
    "SerialGap",
    "apply_delta",
    "delta_from_dict",
    "delta_to_dict",
    "diff",
    "endpoint_from_dict",
    "endpoint_to_dict",
    "is_exit_route",
    "is_stale",
    "netmap_from_dict",
    "netmap_to_dict",
    "peer_to_dict",
]


ENDPOINT_SOURCES = ("reported", "observed", "local", "reflexive")
MAX_REVOCATION_LIST = 40 * 1024  # bytes: the DHT's cap on any record (discovery/records.py MAX_RECORD)


class SerialGap(ValueError):
    """A delta does not start at the applied serial: the agent must re-sync in full."""


# ----------------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """Where a node listens: control TCP port and data UDP port on one address.

    `source` is "reported" (the agent said so), "observed" (the server saw the connection come
    from this address), or one of the UDP candidates the agent reported besides: "local" (an
    interface address) or "reflexive" (its data port as a public hub saw it)."""

    ip: str
    control_port: int
    udp_port: int
    source: str = "reported"


@dataclass(frozen=True, slots=True, order=True)
class Route:
    """Traffic for `prefix` goes to the peer `via`. A default route (0.0.0.0/0, ::/0) is not routed
    like the others: it says that `via` is an approved exit node, which a node uses only when it
    selects it (`is_exit_route`, nodeagent/routing/exits.py)."""

    prefix: str
    via: str


def is_exit_route(route: Route) -> bool:
    """A default route: its `via` offers itself as an exit node to the internet."""
    return route.prefix in ("0.0.0.0/0", "::/0")


@dataclass(frozen=True, slots=True, order=True)
class Revocation:
    peer_id: str
    fingerprint: str  # hex SHA-256 of the certificate's signed part


@dataclass(frozen=True, slots=True)
class SelfInfo:
    """This node as the server sees it. `dns_suffix`: the network's DNS suffix (peers answer to
    `<name>.<dns_suffix>`), None when the network has none; `is_exit`: an operator approved this
    node as an exit node (it forwards and masquerades what peers send to the internet);
    `use_exit`: the exit node the operator chose for this node (a peer id), None for none."""

    peer_id: str
    name: str
    overlay_ip: str
    prefix_len: int
    is_public: bool = False
    is_relay: bool = False
    dns_suffix: str | None = None
    is_exit: bool = False
    use_exit: str | None = None


@dataclass(frozen=True, slots=True)
class Peer:
    peer_id: str
    name: str
    overlay_ip: str
    fingerprint: str
    endpoints: tuple[Endpoint, ...] = ()
    is_public: bool = False
    is_relay: bool = False
    relay: str | None = None  # reach this peer through that relay's peer id; None = direct
    online: bool = False


@dataclass(frozen=True, slots=True)
class NetMap:
    """What one node must know. Lists are sorted so equal maps encode to equal bytes."""

    network: str
    serial: int
    node: SelfInfo
    peers: tuple[Peer, ...] = ()
    routes: tuple[Route, ...] = ()
    relays: tuple[str, ...] = ()
    revoked: tuple[Revocation, ...] = ()
    policy: Policy = ALLOW_ALL  # what may reach this node and what it may reach (policy.py)
    revocation_list: bytes | None = None  # the CA's signed revocation list (a DHT record), if any

    def peer(self, peer_id: str) -> Peer | None:
        for p in self.peers:
            if p.peer_id == peer_id:
                return p
        return None


@dataclass(frozen=True, slots=True)
class NetMapDelta:
    """Changes from the map at `base_serial` to the map at `serial`. A section that is None is
    unchanged; a tuple replaces the section (routes, relays, revoked) in full."""

    network: str
    base_serial: int
    serial: int
    node: SelfInfo | None = None
    upsert: tuple[Peer, ...] = ()
    remove: tuple[str, ...] = ()
    routes: tuple[Route, ...] | None = None
    relays: tuple[str, ...] | None = None
    revoked: tuple[Revocation, ...] | None = None
    policy: Policy | None = None
    revocation_list: bytes | None = None  # a newer CA revocation list; None: unchanged

    @property
    def is_empty(self) -> bool:
        return (self.node is None and not self.upsert and not self.remove and self.routes is None
                and self.relays is None and self.revoked is None and self.policy is None
                and self.revocation_list is None)


# ----------------------------------------------------------------------------- pure operations


def is_stale(applied_serial: int | None, incoming_serial: int) -> bool:
    """An incoming map older than the applied one is ignored (equal is re-applied harmlessly)."""
    return applied_serial is not None and incoming_serial < applied_serial


def diff(old: NetMap, new: NetMap) -> NetMapDelta:
    """The delta that turns `old` into `new` (apply_delta(old, diff(old, new)) == new)."""
    if old.network != new.network:
        raise ValueError("cannot diff maps of different networks")
    old_peers = {p.peer_id: p for p in old.peers}
    new_peers = {p.peer_id: p for p in new.peers}
    upsert = tuple(p for pid, p in new_peers.items() if old_peers.get(pid) != p)
    remove = tuple(sorted(pid for pid in old_peers if pid not in new_peers))
    return NetMapDelta(
        network=new.network,
        base_serial=old.serial,
        serial=new.serial,
        node=None if old.node == new.node else new.node,
        upsert=upsert,
        remove=remove,
        routes=None if old.routes == new.routes else new.routes,
        relays=None if old.relays == new.relays else new.relays,
        revoked=None if old.revoked == new.revoked else new.revoked,
        policy=None if old.policy == new.policy else new.policy,
        revocation_list=None if old.revocation_list == new.revocation_list else new.revocation_list,
    )


def apply_delta(netmap: NetMap, delta: NetMapDelta) -> NetMap:
    if delta.network != netmap.network:
        raise SerialGap(f"delta for network {delta.network!r}, applied map is {netmap.network!r}")
    if delta.base_serial != netmap.serial:
        raise SerialGap(f"delta starts at serial {delta.base_serial}, applied serial is {netmap.serial}")
    peers = {p.peer_id: p for p in netmap.peers}
    for pid in delta.remove:
        peers.pop(pid, None)
    for p in delta.upsert:
        peers[p.peer_id] = p
    return replace(
        netmap,
        serial=delta.serial,
        node=delta.node if delta.node is not None else netmap.node,
        peers=tuple(sorted(peers.values(), key=lambda p: p.peer_id)),
        routes=delta.routes if delta.routes is not None else netmap.routes,
        relays=delta.relays if delta.relays is not None else netmap.relays,
        revoked=delta.revoked if delta.revoked is not None else netmap.revoked,
        policy=delta.policy if delta.policy is not None else netmap.policy,
        revocation_list=netmap.revocation_list if delta.revocation_list is None else delta.revocation_list,
    )


# ----------------------------------------------------------------------------- plain data


def endpoint_to_dict(e: Endpoint) -> dict[str, object]:
    return {"ip": e.ip, "control_port": e.control_port, "udp_port": e.udp_port, "source": e.source}


def _self_d(s: SelfInfo) -> dict[str, object]:
    return {"peer_id": s.peer_id, "name": s.name, "overlay_ip": s.overlay_ip, "prefix_len": s.prefix_len,
            "is_public": s.is_public, "is_relay": s.is_relay, "dns_suffix": s.dns_suffix,
            "is_exit": s.is_exit, "use_exit": s.use_exit}


def _peer_d(p: Peer) -> dict[str, object]:
    return {"peer_id": p.peer_id, "name": p.name, "overlay_ip": p.overlay_ip, "fingerprint": p.fingerprint,
            "endpoints": [endpoint_to_dict(e) for e in p.endpoints], "is_public": p.is_public,
            "is_relay": p.is_relay, "relay": p.relay, "online": p.online}


def peer_to_dict(p: Peer) -> dict[str, object]:
    """One entry of a map's `peers` (and a delta's `upsert`), as netmap_to_dict writes it."""
    return _peer_d(p)


def _route_d(r: Route) -> dict[str, object]:
    return {"prefix": r.prefix, "via": r.via}


def _revocation_d(r: Revocation) -> dict[str, object]:
    return {"peer_id": r.peer_id, "fingerprint": r.fingerprint}


def _with_list(d: dict[str, object], raw: bytes | None) -> dict[str, object]:
    if raw is not None:  # the key only when there is a list: maps without one are unchanged
        d["revocation_list"] = base64.b64encode(raw).decode("ascii")
    return d


def netmap_to_dict(m: NetMap) -> dict[str, object]:
    """Plain data (str/int/bool/list/dict/None): also the golden-file and persisted form."""
    return _with_list({
        "network": m.network, "serial": m.serial, "node": _self_d(m.node),
        "peers": [_peer_d(p) for p in m.peers], "routes": [_route_d(r) for r in m.routes],
        "relays": list(m.relays), "revoked": [_revocation_d(r) for r in m.revoked],
        "policy": policy_to_dict(m.policy),
    }, m.revocation_list)


def delta_to_dict(d: NetMapDelta) -> dict[str, object]:
    return _with_list({
        "network": d.network, "base_serial": d.base_serial, "serial": d.serial,
        "node": None if d.node is None else _self_d(d.node),
        "upsert": [_peer_d(p) for p in d.upsert], "remove": list(d.remove),
        "routes": None if d.routes is None else [_route_d(r) for r in d.routes],
        "relays": None if d.relays is None else list(d.relays),
        "revoked": None if d.revoked is None else [_revocation_d(r) for r in d.revoked],
        "policy": None if d.policy is None else policy_to_dict(d.policy),
    }, d.revocation_list)


def _revocation_list(o: StrictMap, what: str) -> bytes | None:
    text = o.str("revocation_list", 4 * ((MAX_REVOCATION_LIST + 2) // 3), optional=True)
    if text is None:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed(f"{what}.revocation_list is not base64") from None
    if not raw:
        raise Malformed(f"{what}.revocation_list is empty")
    return raw


def endpoint_from_dict(v: object) -> Endpoint:
    o = StrictMap(v, "endpoint")
    e = Endpoint(ip=check_ip(o.str("ip", 45), "endpoint.ip"), control_port=o.int("control_port", 1, 65535),
                 udp_port=o.int("udp_port", 1, 65535), source=o.str("source", 16))
    if e.source not in ENDPOINT_SOURCES:
        raise Malformed("endpoint.source must be 'reported', 'observed', 'local' or 'reflexive'")
    o.done()
    return e


def _self(v: object) -> SelfInfo:
    """`dns_suffix`, `is_exit` and `use_exit` may be absent (a map persisted by an agent of the
    version before them): no DNS names, no exit node."""
    o = StrictMap(v, "node")
    s = SelfInfo(peer_id=o.peer_id("peer_id"), name=o.str("name"),
                 overlay_ip=check_ip(o.str("overlay_ip", 45), "node.overlay_ip"),
                 prefix_len=o.int("prefix_len", 0, 128), is_public=o.bool("is_public"),
                 is_relay=o.bool("is_relay"),
                 dns_suffix=o.str("dns_suffix", 253, nullable=True, optional=True),
                 is_exit=o.bool("is_exit") if "is_exit" in o else False,
                 use_exit=o.peer_id("use_exit", nullable=True) if "use_exit" in o else None)
    o.done()
    if s.dns_suffix is not None and not is_suffix(s.dns_suffix):
        raise Malformed("node.dns_suffix is not a DNS name")
    if s.use_exit == s.peer_id:
        raise Malformed("node.use_exit names the node itself")
    return s


def _peer(v: object) -> Peer:
    o = StrictMap(v, "peer")
    p = Peer(peer_id=o.peer_id("peer_id"), name=o.str("name"),
             overlay_ip=check_ip(o.str("overlay_ip", 45), "peer.overlay_ip"),
             fingerprint=check_fingerprint(o.str("fingerprint", 64), "peer.fingerprint"),
             endpoints=tuple(endpoint_from_dict(e) for e in o.list("endpoints")),
             is_public=o.bool("is_public"), is_relay=o.bool("is_relay"),
             relay=o.peer_id("relay", nullable=True), online=o.bool("online"))
    o.done()
    return p


def _route(v: object) -> Route:
    o = StrictMap(v, "route")
    prefix = o.str("prefix", 49)
    try:
        prefix = str(ipaddress.ip_network(prefix, strict=True))
    except ValueError:
        raise Malformed("route.prefix is not a network prefix") from None
    r = Route(prefix=prefix, via=o.peer_id("via"))
    o.done()
    return r


def _revocation(v: object) -> Revocation:
    o = StrictMap(v, "revocation")
    r = Revocation(peer_id=o.peer_id("peer_id"),
                   fingerprint=check_fingerprint(o.str("fingerprint", 64), "revocation.fingerprint"))
    o.done()
    return r


def _unique_peers(peers: tuple[Peer, ...], what: str) -> tuple[Peer, ...]:
    if len({p.peer_id for p in peers}) != len(peers):
        raise Malformed(f"{what}: duplicate peer id")
    return tuple(sorted(peers, key=lambda p: p.peer_id))


def netmap_from_dict(v: object) -> NetMap:
    o = StrictMap(v, "netmap")
    m = NetMap(
        network=o.str("network"), serial=o.int("serial"), node=_self(o.map("node")),
        peers=_unique_peers(tuple(_peer(p) for p in o.list("peers")), "netmap.peers"),
        routes=tuple(sorted(_route(r) for r in o.list("routes"))),
        relays=tuple(sorted(check_peer_id(r, "netmap.relays[]") for r in o.list("relays"))),
        revoked=tuple(sorted(_revocation(r) for r in o.list("revoked"))),
        policy=policy_from_dict(o.map("policy")),
        revocation_list=_revocation_list(o, "netmap"),
    )
    o.done()
    return m


def delta_from_dict(v: object) -> NetMapDelta:
    o = StrictMap(v, "delta")
    node = o.map("node", nullable=True)
    routes = o.list("routes", nullable=True)
    relays = o.list("relays", nullable=True)
    revoked = o.list("revoked", nullable=True)
    policy = o.map("policy", nullable=True)
    d = NetMapDelta(
        network=o.str("network"), base_serial=o.int("base_serial"), serial=o.int("serial"),
        node=None if node is None else _self(node),
        upsert=_unique_peers(tuple(_peer(p) for p in o.list("upsert")), "delta.upsert"),
        remove=tuple(sorted(check_peer_id(r, "delta.remove[]") for r in o.list("remove"))),
        routes=None if routes is None else tuple(sorted(_route(r) for r in routes)),
        relays=None if relays is None else tuple(sorted(check_peer_id(r, "delta.relays[]") for r in relays)),
        revoked=None if revoked is None else tuple(sorted(_revocation(r) for r in revoked)),
        policy=None if policy is None else policy_from_dict(policy),
        revocation_list=_revocation_list(o, "delta"),
    )
    o.done()
    if d.serial < d.base_serial:
        raise Malformed("delta.serial is older than its base_serial")
    return d
