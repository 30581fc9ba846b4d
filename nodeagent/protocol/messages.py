"""The agent <-> meshadmin websocket messages (/ws/agent/): types, encoding and strict decoding. Pure.

Every message is one binary websocket frame holding a msgpack map with a version and a type:

    {"v": 3, "t": "<type>", ...fields}

server -> agent
    challenge   {nonce: 32 bytes}                 first frame when the socket has no session token
    netmap      {netmap: bin, sig: bin}           full map: on connect and on a re-sync request
    delta       {delta: bin, sig: bin}            changes since `base_serial` (what this socket last got)
    certificate {certificate: bin}                the node's renewed certificate, answer to `renew`
    telemetry   {interval_s}                      send `stats` this often from now on; only to
                                                  agents that named FEATURE_TELEMETRY in `auth`
agent -> server
    auth        {peer_id, signature, serial?,     login: auth.sign_agent_login (shadowmesh/agent-auth/v1);
                 features?}                       `serial`: the map the agent holds (the server
                                                  answers with an empty delta, not the full map,
                                                  when that is the network's current serial);
                                                  `features`: server messages beyond the first
                                                  ones that the agent understands
    resync      {serial}                          "send me the full map": the agent saw a gap
    ack         {serial}                          the agent applied this serial
    endpoints   {endpoints: [Endpoint], agent?}   where the agent listens (control TCP + data UDP)
                                                  and, optionally, its software version
    stats       {uptime_s, peers: [PeerCounters],  per-peer counters, totals since the agent started,
                 dht?: DhtCounters}                and the node's DHT (counters.py) when it runs one
    renew       {}                                "issue me a new certificate" (same key, id, address)
    advertise   {exit_node: bool}                 offer this node as an exit node (true), or stop
                                                  offering it (false); an operator approves it

`v` is constants.PROTOCOL_VERSION; `v` and `t` are the first two keys of every frame, so a
receiver reads a frame's type from its first bytes (`frame_type`) and can refuse it before
decoding the rest. `netmap` and `delta` carry their body as bytes, the msgpack of netmap.py's
plain-data form, and `sig`, the network CA's ML-DSA-87 signature over it (netmap_sign.py): the
agent passes its CA key to `decode_server_message`, which checks the signature before it parses
the body. Endpoints are the plain-data form of netmap.py; a stats item is counters.PeerCounters.
Parsing is strict (strict.py): unknown keys, missing keys, wrong types, out-of-range numbers, bad
addresses or peer ids, an oversized frame, an unknown type or another version all raise a
`strict.MessageError` carrying the websocket close code (constants.CloseCode) the receiver should
use; a signature that does not verify raises `netmap_sign.BadNetmapSignature`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import msgpack
from cryptography.hazmat.primitives.asymmetric import mldsa

from . import netmap_sign
from .constants import MLDSA87_SIGNATURE_SIZE, PROTOCOL_VERSION, CloseCode
from .counters import (
    MAX_ENCODED_SIZE,
    DhtCounters,
    PeerCounters,
    counters_from_dict,
    counters_to_dict,
    dht_from_dict,
    dht_to_dict,
)
from .netmap import (
    Endpoint,
    NetMap,
    NetMapDelta,
    Peer,
    delta_from_dict,
    delta_to_dict,
    endpoint_from_dict,
    endpoint_to_dict,
    netmap_from_dict,
    netmap_to_dict,
    peer_to_dict,
)
from .strict import U64_MAX, Malformed, MessageError, StrictMap

__all__ = [
    "CHALLENGE_SIZE",
    "FEATURE_TELEMETRY",
    "MAX_CERTIFICATE_SIZE",
    "MAX_ENDPOINTS",
    "MAX_FEATURES",
    "MAX_MESSAGE_SIZE",
    "MAX_SIGNATURE_SIZE",
    "MAX_STATS_INTERVAL_S",
    "MAX_VERSION",
    "MIN_STATS_INTERVAL_S",
    "Ack",
    "Advertise",
    "AgentMessage",
    "Auth",
    "CertificateIssued",
    "Challenge",
    "Delta",
    "EndpointReport",
    "Full",
    "Renew",
    "Resync",
    "ServerMessage",
    "Stats",
    "Telemetry",
    "TooLarge",
    "UnknownType",
    "UnsupportedVersion",
    "agent_frame_limit",
    "agent_frame_type",
    "decode_agent_message",
    "decode_server_message",
    "delta_from_body",
    "encode",
    "frame_type",
    "max_stats_size",
    "message_to_dict",
    "netmap_from_body",
    "pack_netmap",
    "pack_peer",
    "pack_peers",
    "sign_delta",
    "sign_full",
]

MAX_MESSAGE_SIZE = 1 << 20  # 1 MiB: larger frames close the socket
CHALLENGE_SIZE = 32
MAX_SIGNATURE_SIZE = 8192
MAX_VERSION = 64  # characters of an agent version string
MAX_ENDPOINTS = 16  # endpoints in one report: where the node listens, then its UDP candidates
MAX_CERTIFICATE_SIZE = 16 * 1024  # a certificate is about 7.3 KB
MAX_FEATURES = 16  # names in `auth.features`
MAX_FEATURE = 32  # characters of one feature name ([a-z0-9_-])
FEATURE_TELEMETRY = "telemetry"  # the agent takes `telemetry` messages (its stats interval)
MIN_STATS_INTERVAL_S = 1.0  # the bounds of `telemetry.interval_s`
MAX_STATS_INTERVAL_S = 3600.0
_FEATURE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


class TooLarge(MessageError):
    code = CloseCode.TOO_LARGE


class UnknownType(MessageError):
    code = CloseCode.UNKNOWN_TYPE


class UnsupportedVersion(MessageError):
    code = CloseCode.UNSUPPORTED_VERSION


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    type: str = field(default="challenge", init=False)


@dataclass(frozen=True, slots=True)
class Full:
    """A full netmap. `body` is the exact signed bytes (msgpack of the plain-data map) and
    `signature` the CA's over it; build one with `sign_full`, decoding fills both."""

    netmap: NetMap
    signature: bytes = b""
    body: bytes = field(default=b"", compare=False, repr=False)
    type: str = field(default="netmap", init=False)


@dataclass(frozen=True, slots=True)
class Delta:
    """A netmap delta, signed like `Full` (`sign_delta`)."""

    delta: NetMapDelta
    signature: bytes = b""
    body: bytes = field(default=b"", compare=False, repr=False)
    type: str = field(default="delta", init=False)


@dataclass(frozen=True, slots=True)
class CertificateIssued:
    """The node's renewed certificate (canonical bytes, protocol/cert.py)."""

    certificate: bytes
    type: str = field(default="certificate", init=False)


@dataclass(frozen=True, slots=True)
class Telemetry:
    """How often the agent sends its `stats` report from now on (the server's choice: it knows
    how many agents report to it and whether anyone watches)."""

    interval_s: float
    type: str = field(default="telemetry", init=False)


@dataclass(frozen=True, slots=True)
class Auth:
    peer_id: str
    signature: bytes
    serial: int | None = None  # the serial of the map the agent holds (optional on the wire)
    # server messages beyond the first ones that the agent takes (optional on the wire; a server
    # ignores names it does not know)
    features: tuple[str, ...] = ()
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
    peers: tuple[PeerCounters, ...]
    dht: DhtCounters | None = None  # the node's DHT (optional on the wire: enrolled agents with it)
    type: str = field(default="stats", init=False)


@dataclass(frozen=True, slots=True)
class Renew:
    """Ask for a new certificate for this node's key, peer id and overlay address."""

    type: str = field(default="renew", init=False)


@dataclass(frozen=True, slots=True)
class Advertise:
    """Offer this node as an exit node (`up --advertise-exit-node`), or withdraw the offer."""

    exit_node: bool
    type: str = field(default="advertise", init=False)


ServerMessage = Challenge | Full | Delta | CertificateIssued | Telemetry
AgentMessage = Auth | Resync | Ack | EndpointReport | Stats | Renew | Advertise


def _pack(value: dict[str, object]) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def pack_peer(peer: Peer) -> bytes:
    """One peer entry as it appears, byte for byte, inside a packed map's `peers`."""
    return _pack(peer_to_dict(peer))


PackPeers = Callable[[NetMap], bytes]


def pack_peers(netmap: NetMap) -> bytes:
    """The entries of a map's `peers`, packed and joined (what follows the array's header)."""
    return b"".join(pack_peer(p) for p in netmap.peers)


def pack_netmap(netmap: NetMap, packed_peers: PackPeers = pack_peers) -> bytes:
    """The msgpack of netmap_to_dict(netmap), byte for byte, with the peer entries from
    `packed_peers` (pack_peers, or joined from entries packed once): a server sends the same peer
    entries in every member's map, so it packs each once instead of once per map. A msgpack map
    or array is its header followed by its items' encodings, so the parts join to exactly the whole."""
    head = netmap_to_dict(replace(netmap, peers=()))  # the same keys in the same order
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_map_header(len(head))]
    for key, value in head.items():
        parts.append(packer.pack(key))
        if key == "peers":
            parts.append(packer.pack_array_header(len(netmap.peers)))
            parts.append(packed_peers(netmap))
        else:
            parts.append(packer.pack(value))
    return b"".join(parts)


def sign_full(netmap: NetMap, ca_private_key: mldsa.MLDSA87PrivateKey,
              packed_peers: PackPeers = pack_peers) -> Full:
    """The full map, signed by the network's CA (one ML-DSA-87 signature); `packed_peers` as for
    pack_netmap."""
    body = pack_netmap(netmap, packed_peers)
    return Full(netmap, netmap_sign.sign(ca_private_key, netmap_sign.LABEL_FULL, body), body)


def sign_delta(delta: NetMapDelta, ca_private_key: mldsa.MLDSA87PrivateKey) -> Delta:
    body = _pack(delta_to_dict(delta))
    return Delta(delta, netmap_sign.sign(ca_private_key, netmap_sign.LABEL_DELTA, body), body)


# ----------------------------------------------------------------------------- encoding


def _signed(msg: Full | Delta) -> tuple[bytes, bytes]:
    if len(msg.signature) != MLDSA87_SIGNATURE_SIZE or not msg.body:
        raise TypeError(f"a {msg.type} message is sent signed (messages.sign_full, sign_delta)")
    return msg.body, msg.signature


def message_to_dict(msg: ServerMessage | AgentMessage) -> dict[str, object]:
    head: dict[str, object] = {"v": PROTOCOL_VERSION, "t": msg.type}
    body: dict[str, object]
    match msg:
        case Challenge():
            body = {"nonce": msg.nonce}
        case Full():
            signed, sig = _signed(msg)
            body = {"netmap": signed, "sig": sig}
        case Delta():
            signed, sig = _signed(msg)
            body = {"delta": signed, "sig": sig}
        case CertificateIssued():
            body = {"certificate": msg.certificate}
        case Telemetry():
            body = {"interval_s": msg.interval_s}
        case Renew():
            body = {}
        case Advertise():
            body = {"exit_node": msg.exit_node}
        case Auth():
            body = {"peer_id": msg.peer_id, "signature": msg.signature}
            if msg.serial is not None:
                body["serial"] = msg.serial
            if msg.features:
                body["features"] = list(msg.features)
        case Resync() | Ack():
            body = {"serial": msg.serial}
        case EndpointReport():
            body = {"endpoints": [endpoint_to_dict(e) for e in msg.endpoints]}
            if msg.agent_version is not None:
                body["agent"] = msg.agent_version
        case Stats():
            body = {"uptime_s": msg.uptime_s, "peers": [counters_to_dict(c) for c in msg.peers]}
            if msg.dht is not None:
                body["dht"] = dht_to_dict(msg.dht)
        case _:
            raise TypeError(f"not a message: {msg!r}")
    return head | body


def encode(msg: ServerMessage | AgentMessage) -> bytes:
    data = _pack(message_to_dict(msg))
    if len(data) > MAX_MESSAGE_SIZE:
        raise TooLarge(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return data


# an empty report with the widest `dht`; its list header grows to 5 bytes
_WIDEST_DHT = DhtCounters(2**64 - 1, 2**64 - 1, 0.5, 2**64 - 1, 2**64 - 1)
_STATS_HEAD = len(encode(Stats(0.5, (), _WIDEST_DHT))) + 4


def max_stats_size(peers: int) -> int:
    """The largest a valid `stats` frame listing at most `peers` peers can be, in bytes."""
    return _STATS_HEAD + peers * MAX_ENCODED_SIZE


def _largest_agent_frames() -> dict[str, int]:
    """Per agent frame type but `stats`, the size of the largest valid frame as this module
    encodes it: every string and byte string at its bound (the agent version in 4-byte UTF-8
    characters), every integer at its largest, every list at its longest. A new agent message
    type needs its largest frame here, or the server refuses it as unknown before decoding
    (tests/nodeagent/protocol/test_messages.py checks every type of AgentMessage has one)."""
    endpoint = Endpoint("f" * 45, 65535, 65535, "x" * 16)
    largest: list[AgentMessage] = [
        Auth("f" * 40, bytes(MAX_SIGNATURE_SIZE), U64_MAX, ("f" * MAX_FEATURE,) * MAX_FEATURES),
        Resync(U64_MAX), Ack(U64_MAX), Renew(),
        EndpointReport((endpoint,) * MAX_ENDPOINTS, "\U0010ffff" * MAX_VERSION), Advertise(False),
    ]
    return {m.type: len(encode(m)) for m in largest}


# Twice the largest canonical encoding (and 64 bytes): another msgpack encoder may write an integer
# or a string header wider than it needs to, and its frame is still decoded and judged.
_AGENT_FRAME_LIMITS = {t: 2 * size + 64 for t, size in _largest_agent_frames().items()}
_AGENT_FRAME_LIMITS["stats"] = MAX_MESSAGE_SIZE  # the server caps these by its network's size


def agent_frame_limit(t: str) -> int:
    """The most bytes an agent frame of type `t` may have before it is refused undecoded
    (UnknownType for a type agents do not send)."""
    limit = _AGENT_FRAME_LIMITS.get(t)
    if limit is None:
        raise UnknownType(f"unknown agent message type {t[:32]!r}")
    return limit


def agent_frame_type(data: object) -> str:
    """The type of a frame an agent sent, read from its first bytes (`frame_type`) and checked
    against the size a valid frame of that type can have, all before anything is decoded:
    TooLarge when it is larger (a `stats` frame may be up to MAX_MESSAGE_SIZE here; the server
    caps those by its network's size, `max_stats_size`), UnknownType for a type agents do not
    send. A 1 MiB frame of any other type thus costs the server a 64-byte look, not a decode."""
    t = frame_type(data)
    assert isinstance(data, bytes | bytearray | memoryview)  # frame_type refused anything else
    limit = agent_frame_limit(t)
    if len(data) > limit:
        raise TooLarge(f"a {t!r} frame of {len(data)} bytes exceeds the {limit} bytes any valid one needs")
    return t


# ----------------------------------------------------------------------------- strict decoding

_HEAD_BYTES = 64  # the map header, "v" and its value, "t" and any known type fit in far fewer


def frame_type(data: object) -> str:
    """The type (`t`) of a frame, read from its first bytes without decoding the rest.

    A frame is a map whose first two keys are "v" (this version) and "t" (a string); a frame that
    does not start so is Malformed, another version is UnsupportedVersion. The type itself is not
    checked here (the decoders refuse an unknown one)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Malformed("expected a binary frame")
    if len(data) > MAX_MESSAGE_SIZE:
        raise TooLarge(f"frame of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    head = msgpack.Unpacker(raw=False, strict_map_key=True)
    head.feed(bytes(data[:_HEAD_BYTES]))
    try:
        size = head.read_map_header()
        first, v, second, t = head.unpack(), head.unpack(), head.unpack(), head.unpack()
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise Malformed(f"a frame must start with a map of 'v' and 't': {type(exc).__name__}") from None
    if size < 2 or first != "v" or second != "t":
        raise Malformed("a frame's first two keys must be 'v' and 't'")
    if type(v) is not int:
        raise Malformed("message.v must be an integer")
    if v != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {v} is not supported (want {PROTOCOL_VERSION})")
    if not isinstance(t, str):
        raise Malformed("message.t must be a string")
    return t


def _envelope(data: object) -> tuple[StrictMap, str]:
    t = frame_type(data)
    assert isinstance(data, bytes | bytearray | memoryview)  # frame_type refused anything else
    try:
        value = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise Malformed(f"not msgpack: {type(exc).__name__}") from None
    o = StrictMap(value, "message")
    if o.raw("v") != PROTOCOL_VERSION or o.raw("t") != t:  # checked by frame_type unless repeated
        raise Malformed("message.v and message.t must appear once")
    return o, t


def _unpack_body(body: bytes, what: str) -> object:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise Malformed(f"{what} is not msgpack: {type(exc).__name__}") from None


def _signed_body(o: StrictMap, key: str, label: bytes,
                 netmap_key: bytes | None) -> tuple[object, bytes, bytes]:
    """(decoded body, body bytes, signature); the signature is checked first when a key is given."""
    body = o.bytes(key, 1, MAX_MESSAGE_SIZE)
    sig = o.bytes("sig", MLDSA87_SIGNATURE_SIZE, MLDSA87_SIGNATURE_SIZE)
    o.done()
    if netmap_key is not None:
        netmap_sign.verify(netmap_key, label, body, sig)  # before a byte of the body is parsed
    return _unpack_body(body, key), body, sig


def netmap_from_body(body: bytes) -> NetMap:
    """A full map from its signed body (the persisted chain keeps bodies as received)."""
    return netmap_from_dict(_unpack_body(body, "netmap"))


def delta_from_body(body: bytes) -> NetMapDelta:
    return delta_from_dict(_unpack_body(body, "delta"))


def decode_server_message(data: bytes, netmap_key: bytes | None = None) -> ServerMessage:
    """Parse a frame the server sent to an agent. With `netmap_key` (the network CA's public key,
    as the agent holds it) a netmap or delta whose signature does not verify raises
    netmap_sign.BadNetmapSignature before its body is parsed; without it the signature is carried
    unchecked (for tools and tests that read what the server sends)."""
    o, t = _envelope(data)
    match t:
        case "challenge":
            msg: ServerMessage = Challenge(o.bytes("nonce", CHALLENGE_SIZE, CHALLENGE_SIZE))
        case "netmap":
            value, body, sig = _signed_body(o, "netmap", netmap_sign.LABEL_FULL, netmap_key)
            return Full(netmap_from_dict(value), sig, body)
        case "delta":
            value, body, sig = _signed_body(o, "delta", netmap_sign.LABEL_DELTA, netmap_key)
            return Delta(delta_from_dict(value), sig, body)
        case "certificate":
            msg = CertificateIssued(o.bytes("certificate", 1, MAX_CERTIFICATE_SIZE))
        case "telemetry":
            interval = o.num("interval_s")
            if not MIN_STATS_INTERVAL_S <= interval <= MAX_STATS_INTERVAL_S:
                raise Malformed(f"telemetry.interval_s must be in "
                                f"{MIN_STATS_INTERVAL_S:g}..{MAX_STATS_INTERVAL_S:g}")
            msg = Telemetry(interval)
        case _:
            raise UnknownType(f"unknown server message type {t[:32]!r}")
    o.done()
    return msg


def _features(items: list[object]) -> tuple[str, ...]:
    if len(items) > MAX_FEATURES:
        raise Malformed(f"auth.features: at most {MAX_FEATURES}")
    for name in items:
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_FEATURE or not set(name) <= _FEATURE_CHARS:
            raise Malformed(f"auth.features: each a name of 1..{MAX_FEATURE} characters a-z, 0-9, '_', '-'")
    return tuple(items)  # type: ignore[arg-type]  # every item checked to be a str


def decode_agent_message(data: bytes) -> AgentMessage:
    """Parse a frame an agent sent to the server."""
    o, t = _envelope(data)
    match t:
        case "auth":
            msg: AgentMessage = Auth(o.peer_id("peer_id"), o.bytes("signature", 1, MAX_SIGNATURE_SIZE),
                                     o.int("serial") if "serial" in o else None,
                                     _features(o.list("features")) if "features" in o else ())
        case "resync":
            msg = Resync(o.int("serial"))
        case "ack":
            msg = Ack(o.int("serial"))
        case "endpoints":
            items = o.list("endpoints")
            if len(items) > MAX_ENDPOINTS:
                raise Malformed(f"endpoints: at most {MAX_ENDPOINTS}")
            version = o.str("agent", MAX_VERSION, optional=True)
            msg = EndpointReport(tuple(endpoint_from_dict(e) for e in items), version)
        case "stats":
            peers = o.list("peers")
            dht = o.map("dht", optional=True)
            msg = Stats(o.num("uptime_s"), tuple(counters_from_dict(p, "stats.peer") for p in peers),
                        None if dht is None else dht_from_dict(dht, "stats.dht"))
        case "renew":
            msg = Renew()
        case "advertise":
            msg = Advertise(o.bool("exit_node"))
        case _:
            raise UnknownType(f"unknown agent message type {t[:32]!r}")
    o.done()
    return msg
