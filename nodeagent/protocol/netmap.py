"""The netmap and the agent websocket messages: one wire schema shared by meshadmin and the agent. Pure.

Every message is one binary websocket frame holding a msgpack map with a version and a type:

    {"v": 1, "t": "<type>", ...fields}

server -> agent
    challenge   {nonce: 32 bytes}                 first frame when the socket has no session token
    netmap      {netmap: NetMap}                  full map: on connect and on a re-sync request
    delta       {delta: NetMapDelta}              changes since `base_serial` (what this socket last got)
agent -> server
    auth        {peer_id, signature}              ML-DSA-87 over the nonce, context shadowmesh/auth/v1
    resync      {serial}                          "send me the full map": the agent saw a gap
    ack         {serial}                          the agent applied this serial
    endpoints   {endpoints: [Endpoint]}           where the agent listens (control TCP + data UDP)
    stats       {uptime_s, peers: [PeerStats]}    per-peer counters, totals since the agent started

Parsing is strict: unknown keys, missing keys, wrong types, out-of-range numbers, bad addresses or
peer ids all raise a `MessageError` carrying the websocket close code the receiver should use.
The netmap carries certificate fingerprints, not certificates: full certificates travel in the
peer handshake, so a push stays small.

Serials: `NetMap.serial` is the network serial the map was computed at. A delta names the serial
it applies on (`base_serial`); `apply_delta` refuses any other base (`SerialGap`) and the agent then
asks for a full map. A map or delta older than the applied one is ignored (`is_stale`).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field, replace
from enum import IntEnum

import msgpack

from .identity import PEER_ID_RE

__all__ = [
    "CHALLENGE_SIZE",
    "MAX_MESSAGE_SIZE",
    "PROTOCOL_VERSION",
    "Ack",
    "AgentMessage",
    "Auth",
    "Challenge",
    "CloseCode",
    "Delta",
    "Endpoint",
    "EndpointReport",
    "Full",
    "Malformed",
    "MessageError",
    "NetMap",
    "NetMapDelta",
    "Peer",
    "PeerStats",
    "Resync",
    "Revocation",
    "Route",
    "SelfInfo",
    "SerialGap",
    "ServerMessage",
    "Stats",
    "TooLarge",
    "UnknownType",
    "UnsupportedVersion",
    "apply_delta",
    "decode_agent_message",
    "decode_server_message",
    "diff",
    "encode",
    "is_stale",
    "message_to_dict",
    "netmap_from_dict",
    "netmap_to_dict",
]

PROTOCOL_VERSION = 1
MAX_MESSAGE_SIZE = 1 << 20  # 1 MiB: larger frames close the socket
CHALLENGE_SIZE = 32
MAX_SIGNATURE_SIZE = 8192
MAX_NAME = 63
MAX_VERSION = 64  # characters of an agent version string
MAX_ITEMS = 10_000
_U64_MAX = (1 << 64) - 1


class CloseCode(IntEnum):
    """Websocket close codes of the agent link (4000-4999 are free for applications)."""

    NORMAL = 1000
    TOO_LARGE = 1009
    MALFORMED = 4400
    AUTH_FAILED = 4401
    REVOKED = 4403
    UNKNOWN_TYPE = 4404
    AUTH_TIMEOUT = 4408
    UNSUPPORTED_VERSION = 4426


class MessageError(ValueError):
    """A frame the receiver must reject; `code` is the close code to use."""

    code: CloseCode = CloseCode.MALFORMED


class Malformed(MessageError):
    code = CloseCode.MALFORMED


class TooLarge(MessageError):
    code = CloseCode.TOO_LARGE


class UnknownType(MessageError):
    code = CloseCode.UNKNOWN_TYPE


class UnsupportedVersion(MessageError):
    code = CloseCode.UNSUPPORTED_VERSION


class SerialGap(ValueError):
    """A delta does not start at the applied serial: the agent must re-sync in full."""


# ----------------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """Where a node listens: control TCP port and data UDP port on one address.

    `source` is "reported" (the agent said so) or "observed" (the server saw the connection come
    from this address)."""

    ip: str
    control_port: int
    udp_port: int
    source: str = "reported"


@dataclass(frozen=True, slots=True, order=True)
class Route:
    """Traffic for `prefix` goes to the peer `via`."""

    prefix: str
    via: str


@dataclass(frozen=True, slots=True, order=True)
class Revocation:
    peer_id: str
    fingerprint: str  # hex SHA-256 of the certificate's signed part


@dataclass(frozen=True, slots=True)
class SelfInfo:
    peer_id: str
    name: str
    overlay_ip: str
    prefix_len: int
    is_public: bool = False
    is_relay: bool = False


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

    @property
    def is_empty(self) -> bool:
        return (self.node is None and not self.upsert and not self.remove and self.routes is None
                and self.relays is None and self.revoked is None)


@dataclass(frozen=True, slots=True)
class PeerStats:
    peer_id: str
    path: str  # "direct" or "relay:<peer id>"
    rtt_ms: float | None = None
    tx_frames: int = 0
    rx_frames: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    lost_frames: int = 0
    replayed_frames: int = 0
    bad_frames: int = 0
    last_handshake_s: float | None = None


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    type: str = field(default="challenge", init=False)


@dataclass(frozen=True, slots=True)
class Full:
    netmap: NetMap
    type: str = field(default="netmap", init=False)


@dataclass(frozen=True, slots=True)
class Delta:
    delta: NetMapDelta
    type: str = field(default="delta", init=False)


@dataclass(frozen=True, slots=True)
class Auth:
    peer_id: str
    signature: bytes
    type: str = field(default="auth", init=False)


@dataclass(frozen=True, slots=True)
class Resync:
    serial: int
    type: str = field(default="resync", init=False)


@dataclass(frozen=True, slots=True)
class Ack:
    serial: int
    type: str = field(default="ack", init=False)


@dataclass(frozen=True, slots=True)
class EndpointReport:
    endpoints: tuple[Endpoint, ...]
    agent_version: str | None = None  # the agent's software version (optional on the wire)
    type: str = field(default="endpoints", init=False)


@dataclass(frozen=True, slots=True)
class Stats:
    uptime_s: float
    peers: tuple[PeerStats, ...]
    type: str = field(default="stats", init=False)


ServerMessage = Challenge | Full | Delta
AgentMessage = Auth | Resync | Ack | EndpointReport | Stats


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
    )


# ----------------------------------------------------------------------------- encoding


def _endpoint_d(e: Endpoint) -> dict:
    return {"ip": e.ip, "control_port": e.control_port, "udp_port": e.udp_port, "source": e.source}


def _self_d(s: SelfInfo) -> dict:
    return {"peer_id": s.peer_id, "name": s.name, "overlay_ip": s.overlay_ip, "prefix_len": s.prefix_len,
            "is_public": s.is_public, "is_relay": s.is_relay}


def _peer_d(p: Peer) -> dict:
    return {"peer_id": p.peer_id, "name": p.name, "overlay_ip": p.overlay_ip, "fingerprint": p.fingerprint,
            "endpoints": [_endpoint_d(e) for e in p.endpoints], "is_public": p.is_public,
            "is_relay": p.is_relay, "relay": p.relay, "online": p.online}


def _route_d(r: Route) -> dict:
    return {"prefix": r.prefix, "via": r.via}


def _revocation_d(r: Revocation) -> dict:
    return {"peer_id": r.peer_id, "fingerprint": r.fingerprint}


def netmap_to_dict(m: NetMap) -> dict:
    """Plain data (str/int/bool/list/dict/None): also the golden-file and persisted form."""
    return {
        "network": m.network, "serial": m.serial, "node": _self_d(m.node),
        "peers": [_peer_d(p) for p in m.peers], "routes": [_route_d(r) for r in m.routes],
        "relays": list(m.relays), "revoked": [_revocation_d(r) for r in m.revoked],
    }


def _delta_d(d: NetMapDelta) -> dict:
    return {
        "network": d.network, "base_serial": d.base_serial, "serial": d.serial,
        "node": None if d.node is None else _self_d(d.node),
        "upsert": [_peer_d(p) for p in d.upsert], "remove": list(d.remove),
        "routes": None if d.routes is None else [_route_d(r) for r in d.routes],
        "relays": None if d.relays is None else list(d.relays),
        "revoked": None if d.revoked is None else [_revocation_d(r) for r in d.revoked],
    }


def _stats_d(s: PeerStats) -> dict:
    return {"peer_id": s.peer_id, "path": s.path, "rtt_ms": s.rtt_ms, "tx_frames": s.tx_frames,
            "rx_frames": s.rx_frames, "tx_bytes": s.tx_bytes, "rx_bytes": s.rx_bytes,
            "lost_frames": s.lost_frames, "replayed_frames": s.replayed_frames,
            "bad_frames": s.bad_frames, "last_handshake_s": s.last_handshake_s}


def message_to_dict(msg: ServerMessage | AgentMessage) -> dict:
    head = {"v": PROTOCOL_VERSION, "t": msg.type}
    match msg:
        case Challenge():
            body = {"nonce": msg.nonce}
        case Full():
            body = {"netmap": netmap_to_dict(msg.netmap)}
        case Delta():
            body = {"delta": _delta_d(msg.delta)}
        case Auth():
            body = {"peer_id": msg.peer_id, "signature": msg.signature}
        case Resync() | Ack():
            body = {"serial": msg.serial}
        case EndpointReport():
            body = {"endpoints": [_endpoint_d(e) for e in msg.endpoints]}
            if msg.agent_version is not None:
                body["agent"] = msg.agent_version
        case Stats():
            body = {"uptime_s": msg.uptime_s, "peers": [_stats_d(s) for s in msg.peers]}
        case _:
            raise TypeError(f"not a message: {msg!r}")
    return head | body


def encode(msg: ServerMessage | AgentMessage) -> bytes:
    data = msgpack.packb(message_to_dict(msg), use_bin_type=True)
    if len(data) > MAX_MESSAGE_SIZE:
        raise TooLarge(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return data


# ----------------------------------------------------------------------------- strict parsing


class _Obj:
    """A checked view of one msgpack map: each key read once, leftovers are an error."""

    __slots__ = ("_d", "_seen", "_what")

    def __init__(self, value: object, what: str) -> None:
        if not isinstance(value, dict):
            raise Malformed(f"{what} must be a map")
        self._d, self._what, self._seen = value, what, set()

    def _get(self, key: str, optional: bool = False):
        self._seen.add(key)
        if key not in self._d:
            if optional:
                return None
            raise Malformed(f"{self._what}: missing {key!r}")
        return self._d[key]

    def done(self) -> None:
        extra = set(self._d) - self._seen
        if extra:
            raise Malformed(f"{self._what}: unknown key(s) {sorted(map(str, extra))}")

    def int(self, key: str, lo: int = 0, hi: int = _U64_MAX) -> int:
        v = self._get(key)
        if type(v) is not int or not lo <= v <= hi:
            raise Malformed(f"{self._what}.{key} must be an integer in {lo}..{hi}")
        return v

    def num(self, key: str, nullable: bool = False) -> float | None:
        v = self._get(key)
        if v is None and nullable:
            return None
        if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
            raise Malformed(f"{self._what}.{key} must be a finite number >= 0")
        return float(v)

    def bool(self, key: str) -> bool:
        v = self._get(key)
        if type(v) is not bool:
            raise Malformed(f"{self._what}.{key} must be a boolean")
        return v

    def str(self, key: str, max_len: int = MAX_NAME, nullable: bool = False,
            optional: bool = False) -> str | None:
        if optional and key not in self._d:
            self._seen.add(key)
            return None
        v = self._get(key)
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not 1 <= len(v) <= max_len:
            raise Malformed(f"{self._what}.{key} must be a string of 1..{max_len} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise Malformed(f"{self._what}.{key} contains control characters")
        return v

    def bytes(self, key: str, lo: int, hi: int) -> bytes:
        v = self._get(key)
        if not isinstance(v, bytes) or not lo <= len(v) <= hi:
            raise Malformed(f"{self._what}.{key} must be {lo}..{hi} bytes")
        return v

    def peer_id(self, key: str, nullable: bool = False) -> str | None:
        v = self._get(key)
        if v is None and nullable:
            return None
        return _peer_id(v, f"{self._what}.{key}")

    def list(self, key: str, nullable: bool = False) -> list | None:
        v = self._get(key)
        if v is None and nullable:
            return None
        if not isinstance(v, list) or len(v) > MAX_ITEMS:
            raise Malformed(f"{self._what}.{key} must be a list of at most {MAX_ITEMS} items")
        return v

    def map(self, key: str, nullable: bool = False) -> object:
        v = self._get(key)
        if v is None and nullable:
            return None
        return v


def _peer_id(v: object, what: str) -> str:
    if not isinstance(v, str) or not PEER_ID_RE.match(v):
        raise Malformed(f"{what} must be a peer id (40 lowercase hex characters)")
    return v


def _ip(v: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise Malformed(f"{what} is not an IP address") from None


def _fingerprint(v: str, what: str) -> str:
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise Malformed(f"{what} must be 64 lowercase hex characters")
    return v


def _endpoint(v: object) -> Endpoint:
    o = _Obj(v, "endpoint")
    e = Endpoint(ip=_ip(o.str("ip", 45), "endpoint.ip"), control_port=o.int("control_port", 1, 65535),
                 udp_port=o.int("udp_port", 1, 65535), source=o.str("source", 16))
    if e.source not in ("reported", "observed"):
        raise Malformed("endpoint.source must be 'reported' or 'observed'")
    o.done()
    return e


def _self(v: object) -> SelfInfo:
    o = _Obj(v, "node")
    s = SelfInfo(peer_id=o.peer_id("peer_id"), name=o.str("name"),
                 overlay_ip=_ip(o.str("overlay_ip", 45), "node.overlay_ip"),
                 prefix_len=o.int("prefix_len", 0, 128), is_public=o.bool("is_public"),
                 is_relay=o.bool("is_relay"))
    o.done()
    return s


def _peer(v: object) -> Peer:
    o = _Obj(v, "peer")
    p = Peer(peer_id=o.peer_id("peer_id"), name=o.str("name"),
             overlay_ip=_ip(o.str("overlay_ip", 45), "peer.overlay_ip"),
             fingerprint=_fingerprint(o.str("fingerprint", 64), "peer.fingerprint"),
             endpoints=tuple(_endpoint(e) for e in o.list("endpoints")),
             is_public=o.bool("is_public"), is_relay=o.bool("is_relay"),
             relay=o.peer_id("relay", nullable=True), online=o.bool("online"))
    o.done()
    return p


def _route(v: object) -> Route:
    o = _Obj(v, "route")
    prefix = o.str("prefix", 49)
    try:
        prefix = str(ipaddress.ip_network(prefix, strict=True))
    except ValueError:
        raise Malformed("route.prefix is not a network prefix") from None
    r = Route(prefix=prefix, via=o.peer_id("via"))
    o.done()
    return r


def _revocation(v: object) -> Revocation:
    o = _Obj(v, "revocation")
    r = Revocation(peer_id=o.peer_id("peer_id"),
                   fingerprint=_fingerprint(o.str("fingerprint", 64), "revocation.fingerprint"))
    o.done()
    return r


def _unique_peers(peers: tuple[Peer, ...], what: str) -> tuple[Peer, ...]:
    if len({p.peer_id for p in peers}) != len(peers):
        raise Malformed(f"{what}: duplicate peer id")
    return tuple(sorted(peers, key=lambda p: p.peer_id))


def netmap_from_dict(v: object) -> NetMap:
    o = _Obj(v, "netmap")
    m = NetMap(
        network=o.str("network"), serial=o.int("serial"), node=_self(o.map("node")),
        peers=_unique_peers(tuple(_peer(p) for p in o.list("peers")), "netmap.peers"),
        routes=tuple(sorted(_route(r) for r in o.list("routes"))),
        relays=tuple(sorted(_peer_id(r, "netmap.relays[]") for r in o.list("relays"))),
        revoked=tuple(sorted(_revocation(r) for r in o.list("revoked"))),
    )
    o.done()
    return m


def _delta(v: object) -> NetMapDelta:
    o = _Obj(v, "delta")
    node = o.map("node", nullable=True)
    routes = o.list("routes", nullable=True)
    relays = o.list("relays", nullable=True)
    revoked = o.list("revoked", nullable=True)
    d = NetMapDelta(
        network=o.str("network"), base_serial=o.int("base_serial"), serial=o.int("serial"),
        node=None if node is None else _self(node),
        upsert=_unique_peers(tuple(_peer(p) for p in o.list("upsert")), "delta.upsert"),
        remove=tuple(sorted(_peer_id(r, "delta.remove[]") for r in o.list("remove"))),
        routes=None if routes is None else tuple(sorted(_route(r) for r in routes)),
        relays=None if relays is None else tuple(sorted(_peer_id(r, "delta.relays[]") for r in relays)),
        revoked=None if revoked is None else tuple(sorted(_revocation(r) for r in revoked)),
    )
    o.done()
    if d.serial < d.base_serial:
        raise Malformed("delta.serial is older than its base_serial")
    return d


def _stats_peer(v: object) -> PeerStats:
    o = _Obj(v, "stats.peer")
    path = o.str("path", 46)
    if path != "direct" and not (path.startswith("relay:") and PEER_ID_RE.match(path[6:])):
        raise Malformed("stats.peer.path must be 'direct' or 'relay:<peer id>'")
    s = PeerStats(peer_id=o.peer_id("peer_id"), path=path, rtt_ms=o.num("rtt_ms", nullable=True),
                  tx_frames=o.int("tx_frames"), rx_frames=o.int("rx_frames"), tx_bytes=o.int("tx_bytes"),
                  rx_bytes=o.int("rx_bytes"), lost_frames=o.int("lost_frames"),
                  replayed_frames=o.int("replayed_frames"), bad_frames=o.int("bad_frames"),
                  last_handshake_s=o.num("last_handshake_s", nullable=True))
    o.done()
    return s


def _envelope(data: object) -> tuple[_Obj, str]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Malformed("expected a binary frame")
    if len(data) > MAX_MESSAGE_SIZE:
        raise TooLarge(f"frame of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        value = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise Malformed(f"not msgpack: {type(exc).__name__}") from None
    o = _Obj(value, "message")
    v = o._get("v")
    if type(v) is not int:
        raise Malformed("message.v must be an integer")
    if v != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {v} is not supported (want {PROTOCOL_VERSION})")
    t = o._get("t")
    if not isinstance(t, str):
        raise Malformed("message.t must be a string")
    return o, t


def decode_server_message(data: bytes) -> ServerMessage:
    """Parse a frame the server sent to an agent."""
    o, t = _envelope(data)
    match t:
        case "challenge":
            msg: ServerMessage = Challenge(o.bytes("nonce", CHALLENGE_SIZE, CHALLENGE_SIZE))
        case "netmap":
            msg = Full(netmap_from_dict(o.map("netmap")))
        case "delta":
            msg = Delta(_delta(o.map("delta")))
        case _:
            raise UnknownType(f"unknown server message type {t[:32]!r}")
    o.done()
    return msg


def decode_agent_message(data: bytes) -> AgentMessage:
    """Parse a frame an agent sent to the server."""
    o, t = _envelope(data)
    match t:
        case "auth":
            msg: AgentMessage = Auth(o.peer_id("peer_id"), o.bytes("signature", 1, MAX_SIGNATURE_SIZE))
        case "resync":
            msg = Resync(o.int("serial"))
        case "ack":
            msg = Ack(o.int("serial"))
        case "endpoints":
            items = o.list("endpoints")
            if len(items) > 16:
                raise Malformed("endpoints: at most 16")
            version = o.str("agent", MAX_VERSION, optional=True)
            msg = EndpointReport(tuple(_endpoint(e) for e in items), version)
        case "stats":
            msg = Stats(o.num("uptime_s"), tuple(_stats_peer(p) for p in o.list("peers")))
        case _:
            raise UnknownType(f"unknown agent message type {t[:32]!r}")
    o.done()
    return msg
