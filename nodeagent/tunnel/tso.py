"""TCP segmentation for a TUN with offloads on (TUNSETOFFLOAD CSUM|TSO4|TSO6). Pure: bytes in, bytes out.

With offloads on, a read from the TUN is a 10-byte virtio_net_hdr followed by either
- one ordinary packet whose transport checksum may be *partial* (flags NEEDS_CSUM: the field at
  csum_start + csum_offset holds only the pseudo-header sum, the kernel left the rest to "the
  hardware"), or
- a TCP super-packet (gso_type TCPV4/TCPV6) of up to 64 KB: one IP + TCP header and a payload
  that the "hardware" must cut into gso_size pieces.
`split(frame)` plays that hardware: it returns real, complete IP packets, each at most
hdr_len + gso_size bytes, so every datagram on the wire carries exactly one valid IP packet
(never a piece of a super-packet: a lost datagram costs one segment, as on a real link).

Per segment (what the kernel's tcp_gso_segment does):
- IPv4: total length, ID + i, header checksum; IPv6: payload length;
- TCP: sequence number advanced by the bytes before it; CWR only on the first segment,
  FIN and PSH only on the last; every other header byte (ACK, window, options) copied;
- the TCP checksum is computed in full (pseudo-header + header + payload), because the peer
  may write the packet to a TUN without vnet headers, which trusts nothing partial.

Checksums use the ones' complement identity 2^16 = 1 (mod 0xFFFF): the big-endian integer of
an even-length buffer, taken mod 0xFFFF, is its folded 16-bit ones' complement sum.
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
    "parse_vnet",
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
_CWR, _FIN, _PSH = 0x80, 0x01, 0x08
_TCP_PROTO = 6


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


def split(frame: bytes) -> list[bytes]:
    """A TUN read (virtio_net_hdr + packet) -> complete IP packets (see the module docstring)."""
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = parse_vnet(frame)
    packet = memoryview(frame)[VNET_HDR_SIZE:]
    kind = gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        if flags & NEEDS_CSUM:
            return [complete_checksum(packet, csum_start, csum_offset)]
        return [frame[VNET_HDR_SIZE:]]
    if kind == GSO_TCPV4:
        return _segment(packet, gso_size, 4)
    if kind == GSO_TCPV6:
        return _segment(packet, gso_size, 6)
    raise OffloadError(f"unsupported gso_type {gso_type}")


def _segment(packet: memoryview, mss: int, version: int) -> list[bytes]:
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

    tcp = packet[ihl:hl]
    ports, seq0, ack_doff, tflags, window = bytes(tcp[0:4]), int.from_bytes(tcp[4:8], "big"), \
        bytes(tcp[8:13]), tcp[13], bytes(tcp[14:16])
    tcp_tail = bytes(tcp[18:])  # urgent pointer + options
    # the TCP header's sum without seq, flags and checksum (those change per segment)
    tcp_sum = (int.from_bytes(ports, "big") + int.from_bytes(ack_doff, "big") * 256
               + int.from_bytes(window, "big") + int.from_bytes(tcp_tail, "big"))
    pseudo += tcp_sum
    if version == 4:
        v_tos, frag_ttl_proto, ip_tail = bytes(packet[0:2]), bytes(packet[6:10]), bytes(packet[12:ihl])
        ip_id = int.from_bytes(packet[4:6], "big")
        ip_sum = (int.from_bytes(v_tos, "big") + int.from_bytes(frag_ttl_proto, "big")
                  + int.from_bytes(ip_tail, "big"))
    else:
        v6_head, v6_tail = bytes(packet[0:4]), bytes(packet[6:40])

    first_flags = tflags & ~(_FIN | _PSH)
    middle_flags = first_flags & ~_CWR
    out = []
    pack_tcp = _TCP.pack
    pack_ip = _IP4.pack
    count = (size + mss - 1) // mss
    for i in range(count):
        off = hl + i * mss
        chunk = packet[off:off + mss]
        clen = len(chunk)
        if i == count - 1:
            fl = tflags if i == 0 else tflags & ~_CWR
        else:
            fl = first_flags if i == 0 else middle_flags
        seq = (seq0 + i * mss) & 0xFFFFFFFF
        tlen = doff + clen
        total = int.from_bytes(chunk, "big")
        if clen & 1:
            total <<= 8
        csum = ~((pseudo + tlen + (seq >> 16) + (seq & 0xFFFF) + fl + total) % 0xFFFF) & 0xFFFF
        th = pack_tcp(ports, seq, ack_doff, fl, window, csum) + tcp_tail
        if version == 4:
            length = ihl + tlen
            ident = (ip_id + i) & 0xFFFF
            ip_csum = ~((ip_sum + length + ident) % 0xFFFF) & 0xFFFF
            ih = pack_ip(v_tos, length, ident, frag_ttl_proto, ip_csum) + ip_tail
        else:
            ih = v6_head + _U16.pack(tlen) + v6_tail
        out.append(b"".join((ih, th, chunk)))
    return out
