"""Chunk mode: one TSO super-packet sealed as ONE AEAD unit and carried in several datagrams. Pure.

Why: per-segment DATA frames cost the sender a Python split and one seal per ~1.4 KB segment,
and the receiver one open, one replay check and one merge per segment. A CHUNK carries the
whole super-packet (up to 64 KB) under one seal; the receiver joins the pieces, opens once
and writes the super-packet to its TUN as one GSO write. The price: one lost datagram loses
the whole chunk (up to 64 KB), so chunks are only sent while the receiver asks for them, and
the receiver asks only while the loss it measures is near zero (`LossPolicy`).

Wire format (docs/protocol.md#chunk-frames), every piece one datagram:

    header(type CHUNK=8, flags 0, length, receiver index, counter, timestamp) ‖ index u8 ‖ count u8 ‖ piece

All pieces of a chunk carry the same receiver index, counter and timestamp; `count` is 1..64,
`index` < count, a piece is at least one byte. The pieces, in index order, are the sealed unit

    ChaCha20-Poly1305(key, nonce(counter), plaintext, aad = CHUNK_AAD(type, flags, receiver
                      index, counter, timestamp, count, sealed length))
    plaintext = gso_type u8 ‖ gso_size u16 ‖ one IPv4/IPv6 TCP super-packet

so a piece that was altered, lost, reordered into another chunk or cut differently makes the
whole unit fail its tag. A chunk consumes ONE counter of the data keypair (the same counter
space as DATA: a nonce is never reused), and the replay window is checked once per chunk,
after the tag verified.

Control (negotiation, receiver-driven): a KEEPALIVE with FrameFlags.CHUNK_CONTROL carries one
byte: bit 0 STATE (1: "send me chunks", 0: "stop"), bit 1 ACK (this answers the peer's control
frame with the state it now uses); other values are malformed. An agent sends CHUNK frames to a
peer only after that peer granted them on the keypair in use, so a peer without chunk support
never receives one. The grant is retried every `Signal.resend_s` until acknowledged; a peer that
never acknowledged any control frame is given up after `Signal.first_tries` (an older agent
drops each of those frames as `malformed`, nothing else).

Bounds: `Reassembler` holds at most `max_inflight` incomplete chunks (1 MiB at the defaults),
each at most MAX_SEALED bytes, none longer than `timeout_s`; the oldest goes first.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .frames import HEADER_SIZE, TAG_SIZE, BadTag, FrameError, FrameType, Header, nonce

__all__ = [
    "CHUNK_SUBHEADER",
    "DONE",
    "DUPLICATE",
    "MAX_PIECES",
    "MAX_PLAIN",
    "MAX_SEALED",
    "MISMATCH",
    "PENDING",
    "SUPER_PREFIX",
    "VNET_SIZE",
    "ChunkError",
    "LossPolicy",
    "Reassembler",
    "Signal",
    "SuperPacket",
    "from_tun",
    "open_chunk",
    "pack_control",
    "pack_super",
    "parse_control",
    "parse_piece",
    "parse_super",
    "piece_size_for",
    "seal_chunk",
    "seal_chunk_iov",
]

CHUNK = int(FrameType.CHUNK)
CHUNK_SUBHEADER = 2  # index u8, count u8
MAX_PIECES = 64  # the kernel's UDP GSO limit: a chunk leaves in one sendmsg
SUPER_PREFIX = 3  # gso_type u8, gso_size u16
MAX_PLAIN = SUPER_PREFIX + 0xFFFF  # one IP packet of at most 65,535 bytes
MAX_SEALED = MAX_PLAIN + TAG_SIZE

GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_ECN = 0x80
NEEDS_CSUM = 1
VNET_SIZE = 10
_GSO_TYPES = {GSO_TCPV4: 4, GSO_TCPV6: 6, GSO_TCPV4 | GSO_ECN: 4, GSO_TCPV6 | GSO_ECN: 6}

_AAD = struct.Struct("!BBIQIBI")  # type, flags, receiver index, counter, timestamp, count, sealed length
_HEAD = struct.Struct("!BBHIQIBB")  # the frame header plus index and count
_INDEXES = bytes(range(MAX_PIECES))
_PREFIX = struct.Struct("!BH")
_VNET = struct.Struct("<BBHHHH")  # virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum start/offset
_TCP = 6
_TCP_CSUM_OFFSET = 16

# Reassembler.add results
PENDING = 0  # stored; the chunk is not complete yet
DONE = 1  # the last piece: the sealed unit is returned
DUPLICATE = 2  # this piece was already stored (count it as a replay)
MISMATCH = 3  # count or timestamp differ from the chunk's first piece, or the unit grew too large


class ChunkError(FrameError):
    """A CHUNK piece, control payload or super-packet is malformed."""


# --- pieces ---------------------------------------------------------------------------------
def piece_size_for(hdr_len: int, gso_size: int) -> int:
    """The piece size that makes every datagram of a chunk exactly as large as the DATA frame of
    one full segment (header_len + gso_size bytes of IP packet, 36 bytes of frame overhead), so
    chunk mode never needs a larger underlay MTU than per-segment mode."""
    return hdr_len + gso_size + HEADER_SIZE + TAG_SIZE - HEADER_SIZE - CHUNK_SUBHEADER


def seal_chunk(aead: ChaCha20Poly1305, receiver_index: int, counter: int, timestamp: int,
               plaintext: bytes | bytearray | memoryview, piece_size: int) -> list[bytes]:
    """Seal `plaintext` (pack_super's output) as one unit and cut it into datagrams of at most
    HEADER_SIZE + 2 + piece_size bytes: every piece as large as `piece_size` but the last."""
    iov, _size, count = seal_chunk_iov(aead, receiver_index, counter, timestamp, plaintext, piece_size)
    return [b"".join(iov[i:i + 2]) for i in range(0, 2 * count, 2)]


def seal_chunk_iov(aead: ChaCha20Poly1305, receiver_index: int, counter: int, timestamp: int,
                   plaintext: bytes | bytearray | memoryview,
                   piece_size: int) -> tuple[list[bytes], int, int]:
    """seal_chunk's datagrams, not joined: (the scatter-gather list header 0, piece 0, header 1,
    piece 1, ... for one GSO send, the size of every datagram but the last, the count). The
    headers are built together (one template, the index and the last length set column-wise)
    and headers and pieces are cut by one struct call each, so no Python step runs per piece."""
    if not 0 < len(plaintext) <= MAX_PLAIN:
        raise ChunkError(f"chunk plaintext of {len(plaintext)} bytes (1..{MAX_PLAIN})")
    if piece_size < 1:
        raise ChunkError("piece size must be positive")
    sealed_len = len(plaintext) + TAG_SIZE
    count = -(-sealed_len // piece_size)
    if count > MAX_PIECES:
        raise ChunkError(f"{count} pieces of {piece_size} bytes: more than {MAX_PIECES}")
    try:
        aad = _AAD.pack(CHUNK, 0, receiver_index, counter, timestamp, count, sealed_len)
        first = _HEAD.pack(CHUNK, 0, CHUNK_SUBHEADER + min(piece_size, sealed_len), receiver_index, counter,
                           timestamp, 0, count)
    except struct.error as exc:
        raise ChunkError(f"cannot encode chunk header: {exc}") from exc
    sealed = aead.encrypt(nonce(counter), plaintext, aad)
    step = HEADER_SIZE + CHUNK_SUBHEADER
    heads = bytearray(first * count)
    heads[HEADER_SIZE::step] = _INDEXES[:count]
    last = sealed_len - (count - 1) * piece_size
    heads[-step + 2:-step + 4] = (CHUNK_SUBHEADER + last).to_bytes(2, "big")
    iov: list[bytes] = [b""] * (2 * count)
    iov[0::2] = _cut(count, step).unpack(heads)  # the cutting is done in C: one struct call each
    iov[1::2] = (*_cut(count - 1, piece_size).unpack_from(sealed), sealed[(count - 1) * piece_size:])
    return iov, step + piece_size if count > 1 else step + sealed_len, count


@functools.lru_cache(maxsize=256)
def _cut(count: int, size: int) -> struct.Struct:
    """A struct that cuts `count` consecutive fields of `size` bytes (bytes objects) in one call."""
    return struct.Struct(f"{size}s" * count)


def parse_piece(header: Header, datagram: bytes | bytearray | memoryview) -> tuple[int, int, bytes]:
    """(index, count, piece) of a CHUNK datagram whose header parse_header() returned."""
    if header.type != CHUNK:
        raise ChunkError("not a CHUNK frame")
    if header.flags:
        raise ChunkError("CHUNK frames carry no flags")
    if len(datagram) < HEADER_SIZE + CHUNK_SUBHEADER + 1:
        raise ChunkError("CHUNK frame without a piece")
    index, count = datagram[HEADER_SIZE], datagram[HEADER_SIZE + 1]
    if not 0 < count <= MAX_PIECES or index >= count:
        raise ChunkError(f"piece {index} of {count}")
    return index, count, bytes(datagram[HEADER_SIZE + CHUNK_SUBHEADER:])


def open_chunk(aead: ChaCha20Poly1305, receiver_index: int, counter: int, timestamp: int, count: int,
               sealed: bytes) -> bytes:
    """Verify and decrypt a reassembled unit. Raises BadTag. The replay check comes after this."""
    aad = _AAD.pack(CHUNK, 0, receiver_index, counter, timestamp, count, len(sealed))
    try:
        return aead.decrypt(nonce(counter), sealed, aad)
    except InvalidTag as exc:
        raise BadTag("chunk does not authenticate") from exc


# --- the super-packet inside ------------------------------------------------------------------
class SuperPacket(NamedTuple):
    vnet: bytes  # the virtio_net_hdr to write in front of it (NEEDS_CSUM, its GSO type and sizes)
    source: bytes  # the inner source address (4 or 16 bytes), for the anti-spoofing check
    packet: memoryview  # the IP packet


def _check_packet(gso_type: int, gso_size: int, packet: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(IP header length, IP + TCP header length) of a TCP super-packet, or ChunkError."""
    version = _GSO_TYPES.get(gso_type)
    if version is None:
        raise ChunkError(f"gso_type {gso_type:#x} is not TCPv4/TCPv6")
    n = len(packet)
    if n < 1 or packet[0] >> 4 != version:
        raise ChunkError(f"gso_type {gso_type:#x} without an IPv{version} packet")
    if version == 4:
        ihl = (packet[0] & 15) * 4
        if ihl < 20 or n < ihl + 20:
            raise ChunkError("short IPv4 header")
        if packet[9] != _TCP or packet[6] & 0x3F or packet[7]:
            raise ChunkError("IPv4 super-packet that is not TCP or is a fragment")
        if int.from_bytes(packet[2:4], "big") != n:
            raise ChunkError("IPv4 total length does not match the packet")
    else:
        ihl = 40
        if n < 60 or packet[6] != _TCP:
            raise ChunkError("IPv6 super-packet that is short or has extension headers")
        if int.from_bytes(packet[4:6], "big") != n - 40:
            raise ChunkError("IPv6 payload length does not match the packet")
    doff = (packet[ihl + 12] >> 4) * 4
    hdr_len = ihl + doff
    if doff < 20 or n <= hdr_len:
        raise ChunkError("bad TCP data offset or no payload")
    if not 0 < gso_size <= 0xFFFF - hdr_len:
        raise ChunkError(f"gso_size {gso_size}")
    return ihl, hdr_len


def from_tun(frame: bytes) -> tuple[int, int, int] | None:
    """A TUN read (virtio_net_hdr ‖ packet) that can travel as a chunk: (gso_type, gso_size,
    header length) of a TCP super-packet with a partial checksum at the usual place; None for
    anything else (which takes the per-segment path)."""
    if len(frame) < VNET_SIZE:
        return None
    flags, gso_type, _hdr, gso_size, csum_start, csum_offset = _VNET.unpack_from(frame)
    if flags != NEEDS_CSUM or gso_type not in _GSO_TYPES or csum_offset != _TCP_CSUM_OFFSET:
        return None
    try:
        ihl, hdr_len = _check_packet(gso_type, gso_size, memoryview(frame)[VNET_SIZE:])
    except ChunkError:
        return None
    if csum_start != ihl:
        return None
    return gso_type, gso_size, hdr_len


def pack_super(gso_type: int, gso_size: int, frame: bytes) -> bytes:
    """The chunk plaintext for a TUN read `frame` that from_tun() accepted."""
    return _PREFIX.pack(gso_type, gso_size) + memoryview(frame)[VNET_SIZE:]


def parse_super(plaintext: bytes) -> SuperPacket:
    """Strictly check an opened chunk's plaintext; ChunkError for anything but one TCP
    super-packet whose headers agree with its length."""
    if len(plaintext) < SUPER_PREFIX + 40:
        raise ChunkError("chunk plaintext too short")
    gso_type, gso_size = _PREFIX.unpack_from(plaintext)
    packet = memoryview(plaintext)[SUPER_PREFIX:]
    ihl, hdr_len = _check_packet(gso_type, gso_size, packet)
    source = bytes(packet[12:16]) if packet[0] >> 4 == 4 else bytes(packet[8:24])
    vnet = _VNET.pack(NEEDS_CSUM, gso_type, hdr_len, gso_size, ihl, _TCP_CSUM_OFFSET)
    return SuperPacket(vnet, source, packet)


# --- control ----------------------------------------------------------------------------------
CONTROL_STATE = 1
CONTROL_ACK = 2


def pack_control(state: bool, ack: bool) -> bytes:
    return bytes(((CONTROL_STATE if state else 0) | (CONTROL_ACK if ack else 0),))


def parse_control(payload: bytes) -> tuple[bool, bool]:
    """(state, ack) of a CHUNK_CONTROL keepalive payload."""
    if len(payload) != 1 or payload[0] > CONTROL_STATE | CONTROL_ACK:
        raise ChunkError("chunk control payload must be one byte 0..3")
    return bool(payload[0] & CONTROL_STATE), bool(payload[0] & CONTROL_ACK)


class Signal:
    """The receiver's side of the negotiation, for one keypair: what it wants (`want`), what the
    peer acknowledged last (`acked`, None: nothing yet), and when to (re)send."""

    __slots__ = ("acked", "declined", "first_tries", "last_sent", "resend_s", "tries", "want")

    def __init__(self, resend_s: float = 0.5, first_tries: int = 5) -> None:
        self.want = False
        self.acked: bool | None = None
        self.declined = False  # the peer answered a grant with "off" (its chunk mode is disabled)
        self.last_sent: float | None = None
        self.tries = 0
        self.resend_s = resend_s
        self.first_tries = first_tries

    def due(self, now: float) -> bool | None:
        """The state to send now, or None (nothing to say, too soon, or the peer never answers)."""
        if self.want == bool(self.acked) or (self.want and self.declined):
            return None
        if self.acked is None and self.tries >= self.first_tries:
            return None
        if self.last_sent is not None and now - self.last_sent < self.resend_s:
            return None
        return self.want

    def sent(self, now: float) -> None:
        self.last_sent = now
        self.tries += 1

    def on_ack(self, state: bool) -> None:
        self.acked = state
        if self.want and not state:
            self.declined = True  # not asked again on this keypair
        self.last_sent = None  # a change of mind may be sent at once


class LossPolicy:
    """Chunks on or off from the loss the receiver measures, with hysteresis.

    `update(now, received, lost)` takes the peer's running totals of authenticated frames and
    of counter gaps (a lost chunk is one gap, like a lost DATA frame). A window closes once it
    holds at least `min_frames` frames and `min_s` seconds. On: `clean_windows` windows in a row
    with no loss at all, and the hold time since the last switch-off has passed. Off: a window
    whose loss is above `off_above` (a fraction of frames). Each switch-off within 4 holds of
    the switch-on doubles the hold (up to `max_hold_s`); a calm period resets it."""

    __slots__ = ("_clean", "_hold", "_lost", "_on_since", "_received", "_start", "base_hold_s",
                 "clean_windows", "hold_until", "max_hold_s", "min_frames", "min_s", "off_above", "on",
                 "switches")

    def __init__(self, *, min_frames: int = 200, min_s: float = 0.2, clean_windows: int = 3,
                 off_above: float = 0.01, hold_s: float = 5.0, max_hold_s: float = 120.0) -> None:
        self.min_frames = min_frames
        self.min_s = min_s
        self.clean_windows = clean_windows
        self.off_above = off_above
        self.base_hold_s = hold_s
        self.max_hold_s = max_hold_s
        self._hold = hold_s
        self.on = False
        self.hold_until = 0.0
        self.switches = 0
        self._clean = 0
        self._start: float | None = None
        self._received = 0
        self._lost = 0
        self._on_since = 0.0

    def update(self, now: float, received: int, lost: int) -> bool:
        if self._start is None or received < self._received:  # first call, or the totals restarted
            self._start, self._received, self._lost = now, received, lost
            return self.on
        frames = received - self._received
        if frames < self.min_frames or now - self._start < self.min_s:
            return self.on
        gaps = max(0, lost - self._lost)
        self._start, self._received, self._lost = now, received, lost
        if self.on:
            if gaps > self.off_above * (frames + gaps):
                self.on = False
                self.switches += 1
                self._clean = 0
                recent = now - self._on_since < 4 * self._hold
                self._hold = min(self.max_hold_s, self._hold * 2) if recent else self.base_hold_s
                self.hold_until = now + self._hold
            return self.on
        self._clean = self._clean + 1 if gaps == 0 else 0
        if self._clean >= self.clean_windows and now >= self.hold_until:
            self.on = True
            self.switches += 1
            self._on_since = now
        return self.on


# --- reassembly -------------------------------------------------------------------------------
class _Partial:
    __slots__ = ("born", "count", "have", "pieces", "size", "timestamp")

    def __init__(self, count: int, timestamp: int, born: float) -> None:
        self.count = count
        self.timestamp = timestamp
        self.born = born
        self.pieces: list[bytes | None] = [None] * count
        self.have = 0
        self.size = 0


_EMPTY: list[bytes | None] = [b""] * MAX_PIECES  # the slots a run's later pieces take (add_run)


class Reassembler:
    """Incomplete chunks by (receiver index, counter): bounded in number, size and age."""

    __slots__ = ("_partials", "expired", "max_inflight", "timeout_s")

    def __init__(self, max_inflight: int = 16, timeout_s: float = 1.0) -> None:
        self.max_inflight = max_inflight
        self.timeout_s = timeout_s
        self._partials: dict[int, _Partial] = {}
        self.expired = 0  # chunks given up incomplete (too old, or pushed out by newer ones)

    def __len__(self) -> int:
        return len(self._partials)

    def add(self, receiver_index: int, counter: int, timestamp: int, index: int, count: int, piece: bytes,
            now: float) -> tuple[int, bytes | None]:
        """Store one piece (parse_piece's output). (DONE, sealed unit) when it completes a chunk,
        (PENDING | DUPLICATE | MISMATCH, None) otherwise."""
        key = (counter << 32) | receiver_index
        partials = self._partials
        if partials and next(iter(partials.values())).born <= now - self.timeout_s:
            self.expire(now)
        p = partials.get(key)
        if p is None:
            if len(partials) >= self.max_inflight:
                del partials[next(iter(partials))]
                self.expired += 1
            if count == 1:
                return DONE, piece
            p = partials[key] = _Partial(count, timestamp, now)
        elif p.count != count or p.timestamp != timestamp:
            return MISMATCH, None
        if p.pieces[index] is not None:
            return DUPLICATE, None
        if p.size + len(piece) > MAX_SEALED:
            return MISMATCH, None
        p.pieces[index] = piece
        p.size += len(piece)
        p.have += 1
        if p.have < p.count:
            return PENDING, None
        del partials[key]
        return DONE, b"".join(p.pieces)  # type: ignore[arg-type]  # every slot is filled here

    def add_run(self, receiver_index: int, counter: int, timestamp: int, index: int, pieces: int, count: int,
                run: bytes, now: float) -> tuple[int, bytes | None] | None:
        """Store `pieces` (2 or more) consecutive pieces `index`..`index + pieces - 1` of one chunk at
        once, their bodies joined in `run` (each body at least one byte). The result is what the
        last of `pieces` add() calls would return when none of them is a duplicate or a mismatch;
        when one would be, or the run does not fit, nothing is stored and the answer is None: the
        caller then adds the pieces one by one, which counts each as add() does.

        The run is kept as one entry in the slot of its first piece; the slots of the others hold
        an empty body, so the unit still joins in index order and a later copy of any of them is a
        duplicate."""
        if pieces < 2 or index < 0 or index + pieces > count or count > MAX_PIECES or len(run) < pieces:
            return None
        key = (counter << 32) | receiver_index
        partials = self._partials
        if partials and next(iter(partials.values())).born <= now - self.timeout_s:
            self.expire(now)
        p = partials.get(key)
        if p is None:
            if len(run) > MAX_SEALED:
                return None
            if len(partials) >= self.max_inflight:
                del partials[next(iter(partials))]
                self.expired += 1
            p = partials[key] = _Partial(count, timestamp, now)
        elif (p.count != count or p.timestamp != timestamp or p.size + len(run) > MAX_SEALED
              or any(slot is not None for slot in p.pieces[index:index + pieces])):
            return None
        slots = p.pieces
        slots[index] = run
        slots[index + 1:index + pieces] = _EMPTY[:pieces - 1]
        p.size += len(run)
        p.have += pieces
        if p.have < p.count:
            return PENDING, None
        del partials[key]
        return DONE, b"".join(slots)  # type: ignore[arg-type]  # every slot is filled here

    def expire(self, now: float) -> int:
        """Forget chunks older than timeout_s; how many."""
        partials = self._partials
        gone = 0
        limit = now - self.timeout_s
        while partials:
            key = next(iter(partials))
            if partials[key].born > limit:
                break
            del partials[key]
            gone += 1
        self.expired += gone
        return gone

    def forget(self, receiver_index: int) -> None:
        """Drop the incomplete chunks of a session that ended (not counted as expired)."""
        for key in [k for k in self._partials if k & 0xFFFFFFFF == receiver_index]:
            del self._partials[key]
