"""Userspace GRO for the TUN write side: merge in-order TCP/IPv4 segments into one GSO write.

Why: on the receiving node the kernel's per-packet cost of a TUN write (the whole receive path
of the inner TCP stack runs inside the write) dominated the profile. The TUN is opened with
IFF_VNET_HDR, so every write starts with a 10-byte virtio_net_hdr; a run of consecutive
segments of one TCP flow is written once, as a super-packet marked GSO_TCPV4 with a partial
checksum, and the kernel hands it to TCP as one large segment (as NIC GRO would). Measured
alone, this step added +33 % single-stream TCP (docs/architecture.md#design-notes).

Rules (a subset of the kernel's tcp_gro_receive, so a merge never changes what TCP sees):
- only IPv4 without options, not fragmented, protocol TCP, with payload;
- same addresses, ports, TOS, TTL, ACK number, window and TCP options bytes (timestamps);
- flags exactly ACK or ACK|PSH; a PSH, or a segment shorter than the first, closes the run;
- the next segment's sequence number is the previous one's end; the run stays under 64 KB.
Anything else is written on its own: with a zero header ("checksum already complete"), or,
for a packet that came in a CSUM_PARTIAL frame (its TCP/UDP checksum holds the pseudo-header
sum only, tso.py), with NEEDS_CSUM at its transport header so the kernel finishes it.
The packets given to `add()` have already passed the AEAD, replay and anti-spoofing checks.

Access policy: `add(pkt, partial, admit)` asks `admit(pkt)` (nodeagent/policy/filter.py) once
per flow run, not once per segment: a segment that extends the run in progress has the same
addresses and ports as the run's first packet, which was admitted, so it is not asked again.
Every packet that starts a run or is written alone is asked; a refused one is not buffered and
`add` returns False (the data path counts the drop).

Reads are the send side's business: with TUN offloads on (tun.py, SHADOWMESH_TUN_TSO) the
kernel hands the data path TCP super-packets, which tso.py cuts into MSS-sized segments with
partial checksums before sealing; with them off each read is a zero header + one IP packet.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from .tso import OffloadError, partial_offsets

__all__ = ["VNET_HDR_SIZE", "TunWriter"]

VNET_HDR_SIZE = 10
_VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
_PLAIN = bytes(VNET_HDR_SIZE)
_NEEDS_CSUM = 1
_GSO_TCPV4 = 1
_ACK, _PSH = 0x10, 0x08
_MAX_SUPER = 65000


def _ip_checksum(header: bytes | bytearray) -> int:
    return ~(int.from_bytes(header, "big") % 0xFFFF) & 0xFFFF


class TunWriter:
    """Buffer one drain's worth of packets; `flush()` at the end of every drain."""

    __slots__ = ("_ack", "_fd", "_first", "_key", "_mss", "_next_seq", "_partial", "_parts", "_psh",
                 "_total", "errors", "merged", "writes")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._first: bytes | None = None
        self._partial = False
        self._parts: list[bytes | memoryview] = []
        # the run being merged: set when a run starts, read only while _first is not None
        self._key: tuple[int, int, bytes, bytes, bytes, bytes]
        self._mss: int
        self._total: int
        self._next_seq: int
        self._psh: bool
        self.writes = 0  # syscalls made
        self.merged = 0  # segments that went out inside a super-packet
        self.errors = 0

    def _write(self, *bufs) -> None:
        try:
            os.writev(self._fd, bufs)
            self.writes += 1
        except BlockingIOError:
            self.errors += 1
        except OSError:
            self.errors += 1

    def _lone(self, pkt: bytes, partial: bool) -> None:
        if not partial:
            self._write(_PLAIN, pkt)
            return
        try:
            start, offset = partial_offsets(pkt)
        except OffloadError:
            self.errors += 1  # the sender flagged a packet that has no TCP/UDP checksum
            return
        self._write(_VNET.pack(_NEEDS_CSUM, 0, 0, 0, start, offset), pkt)

    def add(self, pkt: bytes, partial: bool = False, admit: Callable[[bytes], bool] | None = None) -> bool:
        """Queue one packet; `partial`: it came in a CSUM_PARTIAL frame; `admit`: the access
        policy, asked for every packet but the continuations of a run. False: refused, dropped."""
        n = len(pkt)
        # fast reject: IPv4, IHL 5, TCP, no fragmentation (MF=0, offset 0)
        if n <= 40 or pkt[0] != 0x45 or pkt[9] != 6 or (pkt[6] & 0x3F) or pkt[7]:
            if admit is not None and not admit(pkt):
                return False
            self.flush()
            self._lone(pkt, partial)
            return True
        doff = (pkt[32] >> 4) * 4
        hl = 20 + doff
        plen = n - hl
        flags = pkt[33]
        if plen <= 0 or doff < 20 or (flags & ~_PSH) != _ACK:
            if admit is not None and not admit(pkt):
                return False
            self.flush()
            self._lone(pkt, partial)
            return True
        seq = int.from_bytes(pkt[24:28], "big")
        # tos, ttl, addresses, ports, ack, doff/flags-free window and options must all match
        key = (pkt[1], pkt[8], pkt[12:24], pkt[28:32], pkt[34:36], pkt[40:hl])
        first = self._first
        if (first is not None and key == self._key and seq == self._next_seq and plen <= self._mss
                and self._total + plen + hl <= _MAX_SUPER):
            self._parts.append(memoryview(pkt)[hl:])
            self._total += plen
            self._next_seq = (seq + plen) & 0xFFFFFFFF
            if flags & _PSH or plen < self._mss:
                self._psh = bool(flags & _PSH)
                self.flush()
            return True
        if admit is not None and not admit(pkt):
            return False
        self.flush()
        if flags & _PSH:
            self._lone(pkt, partial)
            return True
        self._first = pkt
        self._partial = partial
        self._key = key
        self._parts = [memoryview(pkt)[hl:]]
        self._mss = plen
        self._total = plen
        self._next_seq = (seq + plen) & 0xFFFFFFFF
        self._psh = False
        return True

    def flush(self) -> None:
        first = self._first
        if first is None:
            return
        self._first = None
        parts = self._parts
        self._parts = []
        if len(parts) == 1:
            self._lone(first, self._partial)
            return
        doff = (first[32] >> 4) * 4
        hl = 20 + doff
        total = self._total
        ip = bytearray(first[:20])
        ip[2:4] = (hl + total).to_bytes(2, "big")
        ip[10:12] = b"\0\0"
        ip[10:12] = _ip_checksum(ip).to_bytes(2, "big")
        tcp = bytearray(first[20:hl])
        if self._psh:
            tcp[13] |= _PSH
        # partial checksum: the pseudo-header sum only, the kernel adds the rest
        pseudo = int.from_bytes(ip[12:20], "big") % 0xFFFF + 6 + doff + total
        tcp[16:18] = (pseudo % 0xFFFF).to_bytes(2, "big")
        vnet = _VNET.pack(_NEEDS_CSUM, _GSO_TCPV4, hl, self._mss, 20, 16)
        self._write(vnet, ip, tcp, *parts)
        self.merged += len(parts)
