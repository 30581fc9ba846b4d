"""The ICMP "fragmentation needed" / "packet too big" answer to a packet the peer's path cannot carry
whole. Pure: bytes in, bytes out; the data path (tunnel/datapath.py) decides when and writes it.

When the kernel knows that the path to a peer is narrower than our frames (udp.py `path_mtus`),
a packet from the TUN that would need a bigger frame is answered the way a router answers it,
instead of being sent as IP fragments that middleboxes may drop:

- IPv4 with DF set: ICMP type 3 code 4 with the next-hop MTU (RFC 1191), quoting the packet's
  header and as much of its payload as keeps the answer within 576 bytes (RFC 1812 4.3.2.3).
- IPv6: ICMPv6 Packet Too Big (type 2, RFC 4443 3.2) with the MTU, quoting as much of the
  packet as keeps the answer within 1,280 bytes; never an MTU below 1,280 (RFC 8200 5): a path
  narrower than that for an IPv6 packet is left to fragmentation of the frame.
- No answer (None): IPv4 without DF (it may be fragmented: ipfrag.py cuts it), a fragment past
  the first, an ICMP error itself (an error never answers an error), a packet that fits, a
  malformed one.

The answer's source is the quoted packet's destination. The answer comes into this node from its
TUN, and the kernel drops a packet from outside whose source is one of its own addresses (the
overlay address would be one); the destination the sender was trying to reach routes through the
TUN, so the answer passes the kernel's source check, and the sender matches it to its socket by
the quoted header, whatever the source.
"""

from __future__ import annotations

import struct

from .tso import checksum

__all__ = ["IPV4_QUOTE_MAX", "IPV6_MIN_MTU", "too_big"]

IPV4_QUOTE_MAX = 576  # the whole IPv4 answer stays within it
IPV6_MIN_MTU = 1280  # the least an IPv6 link carries; also the IPv6 answer's size cap
# unreachable, source quench, redirect, time exceeded, parameter problem
_ICMP_ERRORS_V4 = frozenset({3, 4, 5, 11, 12})
_IPV4_DF = 0x4000
_IPV4_OFFSET = 0x1FFF
_PROTO_ICMP = 1
_PROTO_ICMPV6 = 58
_TTL = 64
_TOS = 0xC0  # internetwork control, as the kernel's own ICMP errors


def too_big(packet: bytes, mtu: int) -> bytes | None:
    """The ICMP answer telling the sender of `packet` that at most `mtu` bytes get through, or
    None when no answer is due (module docstring)."""
    if len(packet) <= mtu or not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        return _too_big_v4(packet, mtu)
    if version == 6:
        return _too_big_v6(packet, mtu)
    return None


def _too_big_v4(packet: bytes, mtu: int) -> bytes | None:
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl:
        return None
    frag = struct.unpack_from("!H", packet, 6)[0]
    if not frag & _IPV4_DF or frag & _IPV4_OFFSET:
        return None
    if packet[9] == _PROTO_ICMP and (len(packet) <= ihl or packet[ihl] in _ICMP_ERRORS_V4):
        return None
    src, dst = packet[12:16], packet[16:20]
    quote = packet[:IPV4_QUOTE_MAX - 20 - 8]
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quote
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    total = 20 + len(icmp)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, _TOS, total, 0, 0, _TTL, _PROTO_ICMP, 0, dst, src)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp


def _too_big_v6(packet: bytes, mtu: int) -> bytes | None:
    if len(packet) < 40 or mtu < IPV6_MIN_MTU:
        return None
    if packet[6] == _PROTO_ICMPV6 and (len(packet) <= 40 or packet[40] < 128):
        return None  # an ICMPv6 error (types 0-127); extension headers before it are not walked
    src, dst = packet[8:24], packet[24:40]
    quote = packet[:IPV6_MIN_MTU - 40 - 8]
    icmp = struct.pack("!BBHI", 2, 0, 0, mtu) + quote
    pseudo = dst + src + struct.pack("!I3xB", len(icmp), _PROTO_ICMPV6)
    icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
    header = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), _PROTO_ICMPV6, _TTL, dst, src)
    return header + icmp
