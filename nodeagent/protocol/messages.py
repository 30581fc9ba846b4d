"""The agent <-> meshadmin websocket messages (/ws/agent/): types, encoding and strict decoding. Pure.

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
    endpoints   {endpoints: [Endpoint], agent?}   where the agent listens (control TCP + data UDP)
                                                  and, optionally, its software version
    stats       {uptime_s, peers: [PeerStats]}    per-peer counters, totals since the agent started

`v` is constants.PROTOCOL_VERSION. The netmap, its delta and endpoints are the plain-data forms
of netmap.py. Parsing is strict (strict.py): unknown keys, missing keys, wrong types,
out-of-range numbers, bad addresses or peer ids, an oversized frame, an unknown type or another
version all raise a `strict.MessageError` carrying the websocket close code
(constants.CloseCode) the receiver should use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from .constants import PROTOCOL_VERSION, CloseCode
from .identity import PEER_ID_RE
from .netmap import (
    Endpoint,
    NetMap,
    NetMapDelta,
    delta_from_dict,
    delta_to_dict,
    endpoint_from_dict,
    endpoint_to_dict,
    netmap_from_dict,
    netmap_to_dict,
)
from .strict import Malformed, MessageError, StrictMap

__all__ = [
    "CHALLENGE_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_SIGNATURE_SIZE",
    "MAX_VERSION",
    "Ack",
    "AgentMessage",
    "Auth",
    "Challenge",
    "Delta",
    "EndpointReport",
    "Full",
    "PeerStats",
    "Resync",
    "ServerMessage",
    "Stats",
    "TooLarge",
    "UnknownType",
    "UnsupportedVersion",
    "decode_agent_message",
    "decode_server_message",
    "encode",
    "message_to_dict",
]

MAX_MESSAGE_SIZE = 1 << 20  # 1 MiB: larger frames close the socket
CHALLENGE_SIZE = 32
MAX_SIGNATURE_SIZE = 8192
MAX_VERSION = 64  # characters of an agent version string


class TooLarge(MessageError):
    code = CloseCode.TOO_LARGE


class UnknownType(MessageError):
    code = CloseCode.UNKNOWN_TYPE


class UnsupportedVersion(MessageError):
    code = CloseCode.UNSUPPORTED_VERSION


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class PeerStats:
    """One peer's counters in a `Stats` report."""

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


# ----------------------------------------------------------------------------- encoding


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
            body = {"delta": delta_to_dict(msg.delta)}
        case Auth():
            body = {"peer_id": msg.peer_id, "signature": msg.signature}
        case Resync() | Ack():
            body = {"serial": msg.serial}
        case EndpointReport():
            body = {"endpoints": [endpoint_to_dict(e) for e in msg.endpoints]}
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


# ----------------------------------------------------------------------------- strict decoding


def _stats_peer(v: object) -> PeerStats:
    o = StrictMap(v, "stats.peer")
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


def _envelope(data: object) -> tuple[StrictMap, str]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Malformed("expected a binary frame")
    if len(data) > MAX_MESSAGE_SIZE:
        raise TooLarge(f"frame of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        value = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise Malformed(f"not msgpack: {type(exc).__name__}") from None
    o = StrictMap(value, "message")
    v = o.raw("v")
    if type(v) is not int:
        raise Malformed("message.v must be an integer")
    if v != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {v} is not supported (want {PROTOCOL_VERSION})")
    t = o.raw("t")
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
            msg = Delta(delta_from_dict(o.map("delta")))
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
            msg = EndpointReport(tuple(endpoint_from_dict(e) for e in items), version)
        case "stats":
            msg = Stats(o.num("uptime_s"), tuple(_stats_peer(p) for p in o.list("peers")))
        case _:
            raise UnknownType(f"unknown agent message type {t[:32]!r}")
    o.done()
    return msg
