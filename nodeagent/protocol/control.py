"""Control-channel codec for the peer TCP connection (port 8443). Pure: bytes in, messages out.

Framing (big-endian): every frame is

    length u32 (bytes after this field, 1..MAX_CONTROL_MESSAGE) ‖ kind u8 ‖ body

and the length is checked before anything is buffered, so a peer cannot make us hold more
than MAX_CONTROL_MESSAGE (64 KiB) per frame.

    kind 1 HANDSHAKE (clear): body = one handshake message (handshake.py; it starts with its own
           type byte). Only before the channel has keys: it is how a connection begins.
    kind 2 SEALED: body = counter u64 ‖ ChaCha20-Poly1305(control key, nonce(counter),
           message, aad = length ‖ kind ‖ counter). Every message after the first handshake.

Control keys and counters (my call, as the brief asked): the handshake derives separate control
keys per direction (handshake.SessionKeys.i2r_control / r2i_control), distinct from the data
keys, so the two counter spaces can never collide. TCP delivers in order, so the receiver demands
exactly the next counter (0, 1, 2...): a replayed, dropped or reordered frame breaks the channel
(ControlError), no window needed. A channel keeps the keys of the handshake that opened it;
later rekeys of the DATA keypair ride inside it as sealed `Handshake` messages, and the agent
closes and reopens the connection to refresh the control keys (at the latest when a counter
would reach 2^64 - 1, far beyond any lifetime).

Sealed messages (first byte = ControlType, then the body):

    UDP_ENDPOINT    1  ip version u8 (4|6) ‖ address (4|16) ‖ port u16
                       (the unspecified address means "the address you see this connection from")
    KEEPALIVE       2  timestamp u64 (sender ms) ‖ echo u64 (last peer timestamp seen, 0 = none)
                       ‖ held_ms u32 (how long that echo waited) — RTT = now - echo - held
    ROUTES          3  serial u64 ‖ count u16 ‖ count x (ip version u8 ‖ address ‖ prefix_len u8)
                       (host bits must be zero; at most MAX_ROUTES)
    CLOSE           4  reason u8 (CloseReason) ‖ text (u8 length ‖ UTF-8)
    RELAY_HANDSHAKE 5  peer id (20) ‖ handshake message: to a hub, the id is the destination;
                       from the hub, the source. The hub forwards it without reading it.
    HANDSHAKE       6  a handshake message (rekeys of the data keypair on an open channel)

Every parser is strict and raises ControlError (or its subclass BadControlTag); nothing else.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .constants import MAX_CONTROL_MESSAGE, PEER_ID_SIZE
from .identity import PEER_ID_RE
from .wire import Reader

__all__ = [
    "MAX_CONTROL_MESSAGE",
    "MAX_ROUTES",
    "BadControlTag",
    "Close",
    "CloseReason",
    "ControlChannel",
    "ControlCipher",
    "ControlError",
    "ControlType",
    "Deframer",
    "FrameKind",
    "Handshake",
    "Keepalive",
    "Message",
    "RelayHandshake",
    "Routes",
    "UdpEndpoint",
    "decode_message",
    "encode_message",
    "frame_clear_handshake",
    "frame_length",
]

MAX_ROUTES = 1024
_PREFIX = struct.Struct("!IB")
_SEALED_HEAD = struct.Struct("!IBQ")
_NONCE = struct.Struct("<4xQ")
_TAG = 16
_U64_MAX = 2**64 - 1


class ControlError(ValueError):
    """A control frame or message is malformed, out of sequence or not allowed now."""


class BadControlTag(ControlError):
    """A sealed control frame does not authenticate."""


class FrameKind(enum.IntEnum):
    HANDSHAKE = 1
    SEALED = 2


class ControlType(enum.IntEnum):
    UDP_ENDPOINT = 1
    KEEPALIVE = 2
    ROUTES = 3
    CLOSE = 4
    RELAY_HANDSHAKE = 5
    HANDSHAKE = 6


class CloseReason(enum.IntEnum):
    NORMAL = 0
    SHUTDOWN = 1
    REVOKED = 2
    PROTOCOL_ERROR = 3
    REPLACED = 4  # a newer connection to the same peer took over


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class UdpEndpoint:
    ip: IPAddress
    port: int


@dataclass(frozen=True, slots=True)
class Keepalive:
    timestamp: int
    echo: int = 0
    held_ms: int = 0


@dataclass(frozen=True, slots=True)
class Routes:
    serial: int
    prefixes: tuple[IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class Close:
    reason: CloseReason
    text: str = ""


@dataclass(frozen=True, slots=True)
class RelayHandshake:
    peer_id: str  # 40 hex characters
    message: bytes


@dataclass(frozen=True, slots=True)
class Handshake:
    message: bytes


Message = Union[UdpEndpoint, Keepalive, Routes, Close, RelayHandshake, Handshake]  # noqa: UP007


# --- message bodies ---------------------------------------------------------------------------


def _pack_ip(ip: IPAddress) -> bytes:
    return bytes([ip.version]) + ip.packed


def _read_ip(r: Reader) -> IPAddress:
    version = r.u8("ip version")
    if version == 4:
        return ipaddress.IPv4Address(r.take(4, "IPv4 address"))
    if version == 6:
        return ipaddress.IPv6Address(r.take(16, "IPv6 address"))
    raise ControlError(f"ip version must be 4 or 6, not {version}")


def _check_range(value: int, bits: int, what: str) -> None:
    if not isinstance(value, int) or not 0 <= value < 2**bits:
        raise ControlError(f"{what} must fit in {bits} bits")


def encode_message(msg: Message) -> bytes:
    """Serialize a control message (type byte + body). Invalid values raise ControlError."""
    try:
        return _encode(msg)
    except ControlError:
        raise
    except (ValueError, TypeError, AttributeError, struct.error) as exc:
        raise ControlError(f"cannot encode {type(msg).__name__}: {exc}") from exc


def _encode(msg: Message) -> bytes:
    if isinstance(msg, UdpEndpoint):
        _check_range(msg.port, 16, "port")
        return bytes([ControlType.UDP_ENDPOINT]) + _pack_ip(ipaddress.ip_address(msg.ip)) + struct.pack(
            "!H", msg.port
        )
    if isinstance(msg, Keepalive):
        _check_range(msg.timestamp, 64, "timestamp")
        _check_range(msg.echo, 64, "echo")
        _check_range(msg.held_ms, 32, "held_ms")
        return bytes([ControlType.KEEPALIVE]) + struct.pack("!QQI", msg.timestamp, msg.echo, msg.held_ms)
    if isinstance(msg, Routes):
        _check_range(msg.serial, 64, "serial")
        if len(msg.prefixes) > MAX_ROUTES:
            raise ControlError(f"at most {MAX_ROUTES} routes")
        parts = [bytes([ControlType.ROUTES]), struct.pack("!QH", msg.serial, len(msg.prefixes))]
        for net in msg.prefixes:
            try:
                net = ipaddress.ip_network(net, strict=True)
            except ValueError as exc:
                raise ControlError(f"bad route {net}: {exc}") from exc
            parts.append(_pack_ip(net.network_address) + bytes([net.prefixlen]))
        return b"".join(parts)
    if isinstance(msg, Close):
        text = msg.text.encode("utf-8")
        if len(text) > 255:
            raise ControlError("close text is at most 255 bytes")
        return bytes([ControlType.CLOSE, CloseReason(msg.reason), len(text)]) + text
    if isinstance(msg, RelayHandshake):
        if not isinstance(msg.peer_id, str) or not PEER_ID_RE.match(msg.peer_id):
            raise ControlError("peer id must be 40 lowercase hex characters")
        if not msg.message:
            raise ControlError("empty handshake message")
        return bytes([ControlType.RELAY_HANDSHAKE]) + bytes.fromhex(msg.peer_id) + bytes(msg.message)
    if isinstance(msg, Handshake):
        if not msg.message:
            raise ControlError("empty handshake message")
        return bytes([ControlType.HANDSHAKE]) + bytes(msg.message)
    raise ControlError(f"not a control message: {type(msg).__name__}")


def decode_message(data: bytes) -> Message:
    """Strictly parse a control message (type byte + body)."""
    r = Reader(data, ControlError)
    code = r.u8("message type")
    try:
        mtype = ControlType(code)
    except ValueError as exc:
        raise ControlError(f"unknown control message type {code}") from exc
    msg: Message
    if mtype is ControlType.UDP_ENDPOINT:
        msg = UdpEndpoint(_read_ip(r), r.u16("port"))
    elif mtype is ControlType.KEEPALIVE:
        msg = Keepalive(r.u64("timestamp"), r.u64("echo"), r.u32("held_ms"))
    elif mtype is ControlType.ROUTES:
        serial, count = r.u64("serial"), r.u16("route count")
        if count > MAX_ROUTES:
            raise ControlError(f"at most {MAX_ROUTES} routes")
        prefixes = []
        for _ in range(count):
            ip = _read_ip(r)
            plen = r.u8("prefix length")
            try:
                prefixes.append(ipaddress.ip_network((ip, plen), strict=True))
            except ValueError as exc:
                raise ControlError(f"bad route {ip}/{plen}: {exc}") from exc
        msg = Routes(serial, tuple(prefixes))
    elif mtype is ControlType.CLOSE:
        code = r.u8("close reason")
        try:
            reason = CloseReason(code)
        except ValueError as exc:
            raise ControlError(f"unknown close reason {code}") from exc
        try:
            text = r.prefixed8("close text").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ControlError("close text is not UTF-8") from exc
        msg = Close(reason, text)
    elif mtype is ControlType.RELAY_HANDSHAKE:
        pid = r.take(PEER_ID_SIZE, "peer id").hex()
        rest = r.take(len(data) - r.position, "handshake message")
        if not rest:
            raise ControlError("empty handshake message")
        return RelayHandshake(pid, rest)
    else:  # HANDSHAKE
        rest = r.take(len(data) - r.position, "handshake message")
        if not rest:
            raise ControlError("empty handshake message")
        return Handshake(rest)
    r.end()
    return msg


# --- framing ----------------------------------------------------------------------------------


def frame_length(prefix: bytes) -> int:
    """The 4-byte length prefix → body length (incl. the kind byte), checked against the cap."""
    if len(prefix) != 4:
        raise ControlError("a length prefix is 4 bytes")
    length = int.from_bytes(prefix, "big")
    if not 1 <= length <= MAX_CONTROL_MESSAGE:
        raise ControlError(f"frame length {length} outside 1..{MAX_CONTROL_MESSAGE}")
    return length


def frame_clear_handshake(message: bytes) -> bytes:
    """A clear HANDSHAKE frame (only for the handshake that opens a connection)."""
    if not message:
        raise ControlError("empty handshake message")
    if len(message) + 1 > MAX_CONTROL_MESSAGE:
        raise ControlError("handshake message too long for a control frame")
    return _PREFIX.pack(len(message) + 1, FrameKind.HANDSHAKE) + bytes(message)


class Deframer:
    """Splits a TCP byte stream into (kind, frame) pairs; `frame` is the whole frame (with prefix).

    The length is validated as soon as its 4 bytes arrive, so at most one capped frame is ever
    buffered. After an error the deframer stays broken (the connection must be closed).
    """

    __slots__ = ("_broken", "_buf")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._broken = False

    def feed(self, data: bytes) -> list[tuple[FrameKind, bytes]]:
        if self._broken:
            raise ControlError("stream already failed")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ControlError("expected bytes")
        self._buf += data
        out = []
        try:
            while len(self._buf) >= 4:
                length = frame_length(bytes(self._buf[:4]))
                if len(self._buf) < 4 + length:
                    break
                frame = bytes(self._buf[: 4 + length])
                del self._buf[: 4 + length]
                try:
                    kind = FrameKind(frame[4])
                except ValueError as exc:
                    raise ControlError(f"unknown frame kind {frame[4]}") from exc
                out.append((kind, frame))
        except ControlError:
            self._broken = True
            raise
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


class ControlCipher:
    """Seals and opens control messages with one handshake's control keys, strict sequence."""

    __slots__ = ("_recv", "_recv_counter", "_send", "_send_counter")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        if len(send_key) != 32 or len(recv_key) != 32:
            raise ControlError("control keys are 32 bytes")
        self._send = ChaCha20Poly1305(bytes(send_key))
        self._recv = ChaCha20Poly1305(bytes(recv_key))
        self._send_counter = 0
        self._recv_counter = 0

    def seal(self, msg: Message) -> bytes:
        body = encode_message(msg)
        length = 1 + 8 + len(body) + _TAG
        if length > MAX_CONTROL_MESSAGE:
            raise ControlError("control message too long")
        counter = self._send_counter
        if counter >= _U64_MAX:
            raise ControlError("control counter exhausted: reconnect")
        self._send_counter = counter + 1
        head = _SEALED_HEAD.pack(length, FrameKind.SEALED, counter)
        return head + self._send.encrypt(_NONCE.pack(counter), body, head)

    def open(self, frame: bytes) -> Message:
        """Open a whole SEALED frame (as returned by Deframer.feed)."""
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise ControlError("expected bytes")
        if len(frame) < _SEALED_HEAD.size + _TAG + 1:
            raise ControlError("sealed frame too short")
        length, kind, counter = _SEALED_HEAD.unpack_from(frame)
        if kind != FrameKind.SEALED or length != len(frame) - 4:
            raise ControlError("not a well-formed sealed frame")
        if counter != self._recv_counter:
            raise ControlError(f"control counter {counter}, expected {self._recv_counter}")
        try:
            body = self._recv.decrypt(
                _NONCE.pack(counter), frame[_SEALED_HEAD.size :], frame[: _SEALED_HEAD.size]
            )
        except InvalidTag as exc:
            raise BadControlTag("control frame does not authenticate") from exc
        self._recv_counter = counter + 1
        return decode_message(body)


class ControlChannel:
    """One TCP connection's protocol state: clear handshake frames first, then sealed only.

    feed(data) returns, in order, clear handshake messages (bytes; only while no keys are
    installed) and opened control Messages. While unsecured it stops right after each handshake
    message and keeps later frames pending, so the caller can run the handshake, install() the
    control keys and call feed(b"") to continue — a CONFIRM and the first sealed frame may
    arrive in one TCP read. Any violation raises ControlError; the channel must then be closed.
    """

    __slots__ = ("_cipher", "_deframer", "_pending")

    def __init__(self) -> None:
        self._deframer = Deframer()
        self._cipher: ControlCipher | None = None
        self._pending: list[tuple[FrameKind, bytes]] = []

    @property
    def secured(self) -> bool:
        return self._cipher is not None

    def install(self, send_key: bytes, recv_key: bytes) -> None:
        if self._cipher is not None:
            raise ControlError("control keys already installed")
        self._cipher = ControlCipher(send_key, recv_key)

    def feed(self, data: bytes) -> list[bytes | Message]:
        self._pending.extend(self._deframer.feed(data))
        out: list[bytes | Message] = []
        while self._pending:
            kind, frame = self._pending.pop(0)
            if kind is FrameKind.HANDSHAKE:
                if self._cipher is not None:
                    raise ControlError("clear handshake frame on a secured channel")
                out.append(frame[5:])
                break  # let the caller install keys before anything after this is read
            if self._cipher is None:
                raise ControlError("sealed frame before the handshake completed")
            out.append(self._cipher.open(frame))
        return out

    def seal(self, msg: Message) -> bytes:
        if self._cipher is None:
            raise ControlError("no control keys yet")
        return self._cipher.seal(msg)
