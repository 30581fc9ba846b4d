"""DHT wire messages: framing and a strict msgpack codec. Pure.

Frame: length u32 big-endian (bytes that follow, 1..MAX_FRAME = 64 KiB, checked before anything
is buffered) || one msgpack map. On the control port the DHT shares the listener with the peer
control channel (docs/dht.md, "transport"): a control frame's first body byte is its kind (1 or
2), a DHT frame's first body byte is a msgpack map header (0x80-0x8f, 0xde, 0xdf), so the first
five bytes of a connection tell the two apart (`is_dht_frame_start`).

Every map has "v" (protocol version, 1), "t" (type) and "rid" (request id, 1..2**32-1, chosen by
the requester and echoed in the answer; 0 only in an Error that answers something unparseable).

    requests                                  answers
    ping        [me] [want]                   pong      [you]
    find_node   key [me] [want]               nodes     nodes [you]
    find_value  key [me] [want]               value     rec nodes [you]  (or nodes, if not held)
    store       key rec [me]                  stored    status [why]
                                              error     code [text]   (to any request)

    key    bin 20            a 160-bit DHT key
    rec    bin <= 40 KiB     a signed record (records.py), verbatim
    me     bin <= 16 KiB     the requester's own node record: "add me to your table"
    want   bool              "send me your own node record" (when the requester cannot yet check
                              who answers at this address)
    you    bin <= 16 KiB     the responder's own node record
    nodes  array <= 20 of [id bin 20, ip bin 4|16, port int 1..65535]

Strict: unknown or missing keys, a wrong type (a bool is not an int), a value out of range, a
frame over the cap or bytes after the map raise a MessageError whose `code` names the problem;
nothing else escapes the decoder.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from .records import MAX_NODE_RECORD, MAX_RECORD
from .table import K

__all__ = [
    "MAX_FRAME",
    "PROTOCOL",
    "Error",
    "FindNode",
    "FindValue",
    "FrameTooLarge",
    "Malformed",
    "Message",
    "MessageError",
    "Nodes",
    "Ping",
    "Pong",
    "Request",
    "Response",
    "Store",
    "Stored",
    "UnknownType",
    "UnsupportedVersion",
    "Value",
    "WireContact",
    "decode",
    "encode",
    "frame_length",
    "is_dht_frame_start",
]

PROTOCOL = 1
MAX_FRAME = 64 * 1024
HEADER = struct.Struct("!I")
MAX_RID = 2**32 - 1
MAX_CODE = 32
MAX_TEXT = 200


class MessageError(ValueError):
    code = "malformed"


class Malformed(MessageError):
    code = "malformed"


class FrameTooLarge(MessageError):
    code = "too_large"


class UnknownType(MessageError):
    code = "unknown_type"


class UnsupportedVersion(MessageError):
    code = "version"


@dataclass(frozen=True, slots=True)
class WireContact:
    peer_id: bytes
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class Ping:
    rid: int
    me: bytes | None = None
    want: bool = False


@dataclass(frozen=True, slots=True)
class FindNode:
    rid: int
    key: bytes
    me: bytes | None = None
    want: bool = False


@dataclass(frozen=True, slots=True)
class FindValue:
    rid: int
    key: bytes
    me: bytes | None = None
    want: bool = False


@dataclass(frozen=True, slots=True)
class Store:
    rid: int
    key: bytes
    rec: bytes
    me: bytes | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    rid: int
    you: bytes | None = None


@dataclass(frozen=True, slots=True)
class Nodes:
    rid: int
    nodes: tuple[WireContact, ...] = ()
    you: bytes | None = None


@dataclass(frozen=True, slots=True)
class Value:
    rid: int
    rec: bytes
    nodes: tuple[WireContact, ...] = ()
    you: bytes | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    rid: int
    status: str
    why: str = ""


@dataclass(frozen=True, slots=True)
class Error:
    rid: int
    code: str
    text: str = ""


Request = Ping | FindNode | FindValue | Store
Response = Pong | Nodes | Value | Stored | Error
Message = Request | Response

_TYPES: dict[str, type[Message]] = {
    "ping": Ping,
    "find_node": FindNode,
    "find_value": FindValue,
    "store": Store,
    "pong": Pong,
    "nodes": Nodes,
    "value": Value,
    "stored": Stored,
    "error": Error,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}

# per type: field -> (wire key, kind, required)
_SCHEMA: dict[type[Message], tuple[tuple[str, str, bool], ...]] = {
    Ping: (("me", "me", False), ("want", "bool", False)),
    FindNode: (("key", "key", True), ("me", "me", False), ("want", "bool", False)),
    FindValue: (("key", "key", True), ("me", "me", False), ("want", "bool", False)),
    Store: (("key", "key", True), ("rec", "rec", True), ("me", "me", False)),
    Pong: (("you", "me", False),),
    Nodes: (("nodes", "nodes", True), ("you", "me", False)),
    Value: (("rec", "rec", True), ("nodes", "nodes", True), ("you", "me", False)),
    Stored: (("status", "code", True), ("why", "code", False)),
    Error: (("code", "code", True), ("text", "text", False)),
}


# --------------------------------------------------------------------------- framing


def is_dht_frame_start(first5: bytes) -> bool:
    """Do the first five bytes of a connection start a DHT frame (length, then a msgpack map)?"""
    if len(first5) < 5:
        return False
    b = first5[4]
    return 0x80 <= b <= 0x8F or b in (0xDE, 0xDF)


def frame_length(header: bytes) -> int:
    """The body length announced by a 4-byte header, checked against the cap."""
    if len(header) != HEADER.size:
        raise Malformed("a frame header is 4 bytes")
    n = int.from_bytes(header, "big")
    if n == 0:
        raise Malformed("empty frame")
    if n > MAX_FRAME:
        raise FrameTooLarge(f"frame of {n} bytes, the cap is {MAX_FRAME}")
    return n


def encode(msg: Message) -> bytes:
    """A whole frame (header and body). Invalid field values raise MessageError."""
    cls = type(msg)
    if cls not in _NAMES:
        raise UnknownType(f"cannot encode {cls.__name__}")
    d: dict[str, object] = {"v": PROTOCOL, "t": _NAMES[cls], "rid": msg.rid}
    _check_rid(msg.rid, allow_zero=cls is Error)
    for field, kind, required in _SCHEMA[cls]:
        value = getattr(msg, field)
        if not required and value in (None, False, ""):
            continue
        _check(kind, value, field)
        if kind == "nodes":
            try:
                value = [[c.peer_id, _packed(c.ip), c.port] for c in value]
            except ValueError:
                raise Malformed(f"bad {field!r}: not an IP address") from None
        d[field] = value
    body = msgpack.packb(d, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise FrameTooLarge(f"message of {len(body)} bytes, the cap is {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


# --------------------------------------------------------------------------- decoding


def decode(body: bytes) -> Message:
    """Strictly decode one frame body (without its header)."""
    if len(body) > MAX_FRAME:
        raise FrameTooLarge(f"frame of {len(body)} bytes, the cap is {MAX_FRAME}")
    try:
        d = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_TEXT,
            max_bin_len=MAX_RECORD,
            max_array_len=K,
            max_map_len=16,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise Malformed(f"not a msgpack value: {type(exc).__name__}") from None
    if not isinstance(d, dict):
        raise Malformed("a message is a map")
    if d.get("v") != PROTOCOL or type(d.get("v")) is not int:
        raise UnsupportedVersion(f"protocol version must be {PROTOCOL}")
    name = d.get("t")
    if type(name) is not str or name not in _TYPES:
        raise UnknownType("unknown message type")
    cls = _TYPES[name]
    rid = d.get("rid")
    _check_rid(rid, allow_zero=cls is Error)
    # each value is checked against its kind in _SCHEMA below: the schema, not mypy, types them
    fields: dict[str, Any] = {"rid": rid}
    allowed = {"v", "t", "rid"}
    for field, kind, required in _SCHEMA[cls]:
        allowed.add(field)
        if field not in d:
            if required:
                raise Malformed(f"{name}: missing {field!r}")
            continue
        value = d[field]
        if kind == "nodes":
            value = _nodes(value, field)
        else:
            _check(kind, value, field)
        fields[field] = value
    extra = set(d) - allowed
    if extra:
        raise Malformed(f"{name}: unknown keys {sorted(map(repr, extra))}")  # str and bytes keys
    return cls(**fields)


def _check_rid(rid: object, allow_zero: bool) -> None:
    if type(rid) is not int or not (0 if allow_zero else 1) <= rid <= MAX_RID:
        raise Malformed("rid must be an integer 1..2**32-1")


def _check(kind: str, value: object, field: str) -> None:
    if kind == "key":
        ok = type(value) is bytes and len(value) == 20
    elif kind == "rec":
        ok = type(value) is bytes and 0 < len(value) <= MAX_RECORD
    elif kind == "me":
        ok = type(value) is bytes and 0 < len(value) <= MAX_NODE_RECORD
    elif kind == "bool":
        ok = type(value) is bool
    elif kind == "code":
        ok = type(value) is str and 0 < len(value) <= MAX_CODE and value.isascii() and value.isprintable()
    elif kind == "text":
        ok = type(value) is str and len(value) <= MAX_TEXT
    elif kind == "nodes":
        ok = isinstance(value, tuple | list) and len(value) <= K and all(
            isinstance(c, WireContact)
            and type(c.peer_id) is bytes
            and len(c.peer_id) == 20
            and type(c.port) is int
            and 1 <= c.port <= 65535
            for c in value
        )
    else:  # pragma: no cover - the schema names only the kinds above
        raise AssertionError(kind)
    if not ok:
        raise Malformed(f"bad {field!r}")


def _nodes(value: object, field: str) -> tuple[WireContact, ...]:
    if type(value) is not list or len(value) > K:
        raise Malformed(f"{field!r} must be an array of at most {K} contacts")
    out = []
    for item in value:
        if type(item) is not list or len(item) != 3:
            raise Malformed(f"{field!r}: a contact is [id, ip, port]")
        peer_id, ip, port = item
        if type(peer_id) is not bytes or len(peer_id) != 20:
            raise Malformed(f"{field!r}: id must be 20 bytes")
        if type(ip) is not bytes or len(ip) not in (4, 16):
            raise Malformed(f"{field!r}: ip must be 4 or 16 bytes")
        if type(port) is not int or not 1 <= port <= 65535:
            raise Malformed(f"{field!r}: port must be 1..65535")
        out.append(WireContact(peer_id, _text_ip(ip), port))
    return tuple(out)


# a node sends and receives the same few hundred addresses over and over: parse each once
@functools.lru_cache(maxsize=4096)
def _packed(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


@functools.lru_cache(maxsize=4096)
def _text_ip(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))
