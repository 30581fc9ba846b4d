"""IPv4 fragmentation of a packet from the TUN that may be fragmented, for a path narrower than
its frame. Pure: bytes in, bytes out; the data path (tunnel/datapath.py step 3b) decides when.

A packet that must not be fragmented (IPv4 with DF, IPv6) is answered with ICMP "too big"
(toobig.py). One that may be (IPv4 without DF) would leave in a frame too big for the path: the
underlay would have to fragment the frame (lost where middleboxes drop fragments), or it vanishes
in an ICMP black hole. So the data path cuts the packet itself, as the router the overlay is
would (RFC 791 3.2), into fragments whose frames fit, and the receiving host reassembles them.

- Every fragment but the last carries a multiple of 8 bytes of the payload and MF; the offsets
  count from the packet's own, so a fragment is cut again correctly, and the last keeps the
  packet's own MF.
- The header is the packet's, with its total length, flags and offset and a new checksum.
- None (nothing to cut, the packet goes on as before): not IPv4, DF set, a header with options
  (copying only the options a fragment must carry is left out: they are rare), a header that
  does not parse, a fragment that would end past 65,535 bytes, a packet that fits, or a limit
  that leaves no room for 8 bytes of payload.
"""

from __future__ import annotations

import struct

from .tso import checksum

__all__ = ["fragment_v4"]

_DF = 0x4000
_MF = 0x2000
_OFFSET = 0x1FFF
_HEADER = 20
_U16 = struct.Struct("!H")


def fragment_v4(packet: bytes, mtu: int) -> list[bytes] | None:
    """`packet` cut into fragments of at most `mtu` bytes each, or None (module docstring)."""
    n = len(packet)
    if n <= mtu or n < _HEADER or packet[0] != 0x45:  # IPv4, a 20-byte header: no options
        return None
    total = _U16.unpack_from(packet, 2)[0]
    flags_offset = _U16.unpack_from(packet, 6)[0]
    if flags_offset & _DF or total != n:
        return None
    step = (mtu - _HEADER) & ~7  # payload bytes per fragment but the last
    if step <= 0:
        return None
    payload = memoryview(packet)[_HEADER:]
    base = flags_offset & _OFFSET
    if base * 8 + len(payload) > 0xFFFF:  # past the end of any IPv4 packet: not ours to cut
        return None
    more = flags_offset & _MF
    head = bytearray(packet[:_HEADER])
    out = []
    for start in range(0, len(payload), step):
        piece = payload[start:start + step]
        last = start + step >= len(payload)
        _U16.pack_into(head, 2, _HEADER + len(piece))
        _U16.pack_into(head, 6, (more if last else _MF) | (base + start // 8))
        head[10:12] = b"\x00\x00"
        _U16.pack_into(head, 10, checksum(head))
        out.append(bytes(head) + piece)
    return out
