"""TCP segmentation for a TUN with offloads on (TUNSETOFFLOAD CSUM|TSO4[|TSO6]). Pure: bytes in, bytes out.

With offloads on, a read from the TUN is a 10-byte virtio_net_hdr followed by either
- one ordinary packet whose transport checksum may be *partial* (flags NEEDS_CSUM: the field at
  csum_start + csum_offset holds only the pseudo-header sum, the kernel left the rest to "the
  hardware"), or
- a TCP super-packet (gso_type TCPV4/TCPV6) of up to 64 KB: one IP + TCP header and a payload
  that the "hardware" must cut into gso_size pieces.
`split(frame)` plays that hardware: it returns real IP packets, each at most
hdr_len + gso_size bytes, so every datagram on the wire carries exactly one IP packet (never a
piece of a super-packet: a lost datagram costs one segment, as on a real link).

Per segment (what the kernel's tcp_gso_segment does):
- IPv4: total length, ID + i, header checksum; IPv6: payload length;
- TCP: sequence number advanced by the bytes before it; CWR only on the first segment,
  FIN and PSH only on the last; every other header byte (ACK, window, options) copied;
- the TCP checksum is left *partial* (the pseudo-header sum, as the kernel's own NEEDS_CSUM
  packets have it), and the data frame says so (FrameFlags.CSUM_PARTIAL): the receiving node
  hands the packet to its kernel with NEEDS_CSUM (gro.py), or calls `finish()` when its TUN has
  no vnet header. Summing every payload byte in Python cost ~4.6 µs per 1400-byte segment on
  the 2-core box, more than sealing it; the receiving kernel does it for free or not at all
  (a locally delivered CHECKSUM_PARTIAL packet is trusted: the AEAD already authenticated it).
  `split(frame, complete=True)` computes full checksums instead.
A GSO_NONE packet with NEEDS_CSUM stays partial when it is plain TCP or UDP right after the IP
header (what `partial_offsets` can find again on the other side); anything else is completed.

Checksums use the ones' complement identity 2^16 = 1 (mod 0xFFFF): the big-endian integer of
an even-length buffer, taken mod 0xFFFF, is its folded 16-bit ones' complement sum.
IPv6 super-packets are cut only when TCP follows the fixed header (no extension headers);
anything else raises, which is one reason TSO6 is off unless asked for (tun.py).
Errors: a frame that does not parse raises `OffloadError` (the data path counts it `malformed`).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "NEEDS_CSUM",
    "VNET_HDR_SIZE",
    "OffloadError",
    "VnetHeader",
    "checksum",
    "complete_checksum",
    "finish",
    "parse_vnet",
    "partial_offsets",
    "split",
]

VNET_HDR_SIZE = 10
NEEDS_CSUM = 1  # virtio_net_hdr flags
GSO_NONE = 0  # virtio_net_hdr gso_type
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_ECN = 0x80  # "the sender may set CWR": we keep CWR on the first segment only either way

_VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
_IP4 = struct.Struct("!2sHH4sH")  # version/ihl + tos, total length, id, frag + ttl + proto, checksum
_TCP = struct.Struct("!4sI5sB2sH")  # ports, seq, ack + data offset, flags, window, checksum
_U16 = struct.Struct("!H")
_HEADERS: dict[tuple[int, int], struct.Struct] = {}  # (IP tail, TCP tail) lengths -> IPv4+TCP headers
_HEADERS6: dict[tuple[int, int], struct.Struct] = {}
_CWR, _FIN, _PSH = 0x80, 0x01, 0x08
_TCP_PROTO = 6
_CSUM_OFFSET = {6: 16, 17: 6}  # TCP, UDP: where the checksum sits in the transport header


class OffloadError(ValueError):
    """A TUN read with a virtio_net_hdr that cannot be turned into packets."""


class VnetHeader(NamedTuple):
    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int


def parse_vnet(frame: bytes | bytearray | memoryview) -> VnetHeader:
    if len(frame) < VNET_HDR_SIZE:
        raise OffloadError("shorter than a virtio_net_hdr")
    return VnetHeader._make(_VNET.unpack_from(frame))


def checksum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """Internet checksum of `data` with `start` (an unfolded sum) added: the value to store."""
    n = len(data)
    total = int.from_bytes(data, "big")
    if n & 1:
        total <<= 8  # an odd tail byte is the high half of a last word padded with zero
    return ~((total + start) % 0xFFFF) & 0xFFFF


def complete_checksum(packet: bytes | bytearray | memoryview, csum_start: int, csum_offset: int) -> bytes:
    """Finish a partial checksum (NEEDS_CSUM, GSO_NONE): sum from csum_start to the end, which
    includes the pseudo-header sum the kernel left in the field, and store it there."""
    where = csum_start + csum_offset
    if csum_start >= len(packet) or where + 2 > len(packet) or csum_offset & 1:
        raise OffloadError(f"checksum field {csum_start}+{csum_offset} outside a {len(packet)}-byte packet")
    value = checksum(memoryview(packet)[csum_start:])
    out = bytearray(packet)
    out[where:where + 2] = _U16.pack(value)
    return bytes(out)


def partial_offsets(packet: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(csum_start, csum_offset) of a CSUM_PARTIAL packet: TCP or UDP right after the IP header."""
    n = len(packet)
    version = packet[0] >> 4 if n else 0
    if version == 4 and n >= 20:
        start, proto = (packet[0] & 15) * 4, packet[9]
    elif version == 6 and n >= 40:
        start, proto = 40, packet[6]
    else:
        raise OffloadError("partial checksum on a packet that is not IPv4/IPv6")
    offset = _CSUM_OFFSET.get(proto)
    if offset is None or start < 20 or n < start + offset + 2:
        raise OffloadError(f"partial checksum on protocol {proto} or a truncated packet")
    return start, offset


def finish(packet: bytes | bytearray | memoryview) -> bytes:
    """Complete the checksum of a CSUM_PARTIAL packet in software (a TUN without vnet header)."""
    return complete_checksum(packet, *partial_offsets(packet))


def split(frame: bytes, complete: bool = False) -> tuple[list[bytes], bool]:
    """A TUN read (virtio_net_hdr + packet) -> (IP packets, partial). `partial`: every packet's
    TCP/UDP checksum field holds the pseudo-header sum only (send with CSUM_PARTIAL)."""
    if len(frame) < VNET_HDR_SIZE:
        raise OffloadError("shorter than a virtio_net_hdr")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = _VNET.unpack_from(frame)
    packet = memoryview(frame)[VNET_HDR_SIZE:]
    kind = gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        if not flags & NEEDS_CSUM:
            return [frame[VNET_HDR_SIZE:]], False
        if not complete:
            try:
                if partial_offsets(packet) == (csum_start, csum_offset):
                    return [frame[VNET_HDR_SIZE:]], True
            except OffloadError:
                pass
        return [complete_checksum(packet, csum_start, csum_offset)], False
    if kind == GSO_TCPV4:
        return _segment(packet, gso_size, 4, complete), not complete
    if kind == GSO_TCPV6:
        return _segment(packet, gso_size, 6, complete), not complete
    raise OffloadError(f"unsupported gso_type {gso_type}")


def _segment(packet: memoryview, mss: int, version: int, complete: bool) -> list[bytes]:
    n = len(packet)
    if n < 1 or packet[0] >> 4 != version:
        raise OffloadError(f"GSO TCPv{version} frame without an IPv{version} packet")
    if version == 4:
        ihl = (packet[0] & 15) * 4
        if ihl < 20 or n < ihl + 20 or packet[9] != _TCP_PROTO or packet[6] & 0x3F or packet[7]:
            raise OffloadError("GSO TCPv4 frame: bad IPv4 header, not TCP, or a fragment")
        pseudo = int.from_bytes(packet[12:20], "big") + _TCP_PROTO
    else:
        ihl = 40
        if n < 60 or packet[6] != _TCP_PROTO:
            raise OffloadError("GSO TCPv6 frame: short, or extension headers before TCP")
        pseudo = int.from_bytes(packet[8:40], "big") + _TCP_PROTO
    doff = (packet[ihl + 12] >> 4) * 4
    hl = ihl + doff
    if doff < 20 or n < hl:
        raise OffloadError("GSO frame: bad TCP data offset")
    size = n - hl
    if mss <= 0 or size <= 0:
        raise OffloadError(f"GSO frame with gso_size {mss} and {size} payload bytes")

    ports, seq0, ack_doff, tflags, window, _csum = _TCP.unpack_from(packet, ihl)
    tcp_tail = bytes(packet[ihl + 18:hl])  # urgent pointer + options
    if complete:  # the TCP header's sum without seq, flags and checksum (they change per segment)
        tcp_sum = (int.from_bytes(ports, "big") + int.from_bytes(ack_doff, "big") * 256
                   + int.from_bytes(window, "big") + int.from_bytes(tcp_tail, "big"))
    if version == 4:
        v_tos, _length, ip_id, frag_ttl_proto, _csum = _IP4.unpack_from(packet)
        ip_tail = bytes(packet[12:ihl])  # addresses + options
        ip_sum = int.from_bytes(v_tos + frag_ttl_proto + ip_tail, "big")  # every piece is whole words
        key = (len(ip_tail), len(tcp_tail))
    else:
        v6_head, v6_tail = bytes(packet[0:4]), bytes(packet[6:40])
        key = (0, len(tcp_tail))
    # one pack per segment for both headers (IP fixed part, IP tail, TCP fixed part, TCP tail)
    fmt = _HEADERS.get(key) if version == 4 else _HEADERS6.get(key)
    if fmt is None:
        if version == 4:
            fmt = _HEADERS[key] = struct.Struct(f"!2sHH4sH{key[0]}s4sI5sB2sH{key[1]}s")
        else:
            fmt = _HEADERS6[key] = struct.Struct(f"!4sH34s4sI5sB2sH{key[1]}s")
    pack = fmt.pack

    first_flags = tflags & ~(_FIN | _PSH)
    middle_flags = first_flags & ~_CWR
    out: list[bytes] = []
    append = out.append
    count = (size + mss - 1) // mss
    last = count - 1
    off = hl
    if (ihl if version == 4 else 0) + doff + min(mss, size) > 0xFFFF:
        raise OffloadError(f"segments of {mss} bytes do not fit an IP length field")
    for i in range(count):
        chunk = packet[off:off + mss]
        off += mss
        if i == last:
            fl = tflags if i == 0 else tflags & ~_CWR
        else:
            fl = first_flags if i == 0 else middle_flags
        seq = (seq0 + i * mss) & 0xFFFFFFFF
        tlen = doff + len(chunk)
        if complete:
            total = int.from_bytes(chunk, "big")
            if len(chunk) & 1:
                total <<= 8
            csum = ~((pseudo + tcp_sum + tlen + (seq >> 16) + (seq & 0xFFFF) + fl + total) % 0xFFFF) & 0xFFFF
        else:
            csum = (pseudo + tlen) % 0xFFFF
        if version == 4:
            length = ihl + tlen
            ident = (ip_id + i) & 0xFFFF
            ip_csum = ~((ip_sum + length + ident) % 0xFFFF) & 0xFFFF
            append(pack(v_tos, length, ident, frag_ttl_proto, ip_csum, ip_tail,
                        ports, seq, ack_doff, fl, window, csum, tcp_tail) + chunk)
        else:
            append(pack(v6_head, tlen, v6_tail, ports, seq, ack_doff, fl, window, csum, tcp_tail) + chunk)
    return out
