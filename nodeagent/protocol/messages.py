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
    stats       {uptime_s, peers: [PeerCounters]} per-peer counters, totals since the agent started

`v` is constants.PROTOCOL_VERSION; `v` and `t` are the first two keys of every frame, so a
receiver reads a frame's type from its first bytes (`frame_type`) and can refuse it before
decoding the rest. The netmap, its delta and endpoints are the plain-data forms of netmap.py;
a stats item is counters.PeerCounters. Parsing is strict (strict.py): unknown keys, missing keys,
wrong types, out-of-range numbers, bad addresses or peer ids, an oversized frame, an unknown type
or another version all raise a `strict.MessageError` carrying the websocket close code
(constants.CloseCode) the receiver should use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from .constants import PROTOCOL_VERSION, CloseCode
from .counters import MAX_ENCODED_SIZE, PeerCounters, counters_from_dict, counters_to_dict
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
    "Resync",
    "ServerMessage",
    "Stats",
    "TooLarge",
    "UnknownType",
    "UnsupportedVersion",
    "decode_agent_message",
    "decode_server_message",
    "encode",
    "frame_type",
    "max_stats_size",
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
    peers: tuple[PeerCounters, ...]
    type: str = field(default="stats", init=False)


ServerMessage = Challenge | Full | Delta
AgentMessage = Auth | Resync | Ack | EndpointReport | Stats


# ----------------------------------------------------------------------------- encoding


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
            body = {"uptime_s": msg.uptime_s, "peers": [counters_to_dict(c) for c in msg.peers]}
        case _:
            raise TypeError(f"not a message: {msg!r}")
    return head | body


def encode(msg: ServerMessage | AgentMessage) -> bytes:
    data = msgpack.packb(message_to_dict(msg), use_bin_type=True)
    if len(data) > MAX_MESSAGE_SIZE:
        raise TooLarge(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return data


_STATS_HEAD = len(encode(Stats(0.5, ()))) + 4  # an empty report; its list header grows to 5 bytes


def max_stats_size(peers: int) -> int:
    """The largest a valid `stats` frame listing at most `peers` peers can be, in bytes."""
    return _STATS_HEAD + peers * MAX_ENCODED_SIZE


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
    try:
        value = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise Malformed(f"not msgpack: {type(exc).__name__}") from None
    o = StrictMap(value, "message")
    if o.raw("v") != PROTOCOL_VERSION or o.raw("t") != t:  # checked by frame_type unless repeated
        raise Malformed("message.v and message.t must appear once")
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
            peers = o.list("peers")
            msg = Stats(o.num("uptime_s"), tuple(counters_from_dict(p, "stats.peer") for p in peers))
        case _:
            raise UnknownType(f"unknown agent message type {t[:32]!r}")
    o.done()
    return msg
