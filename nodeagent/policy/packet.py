"""The fields of an IP packet the access policy looks at: protocol, addresses, ports. Pure.

`flow_of(packet)` reads an IPv4 or IPv6 packet as it comes out of (or goes into) the TUN:

  - IPv4: the header length from IHL; a fragment with a non-zero offset carries no transport
    header (`NOT_FIRST_FRAGMENT`); a first fragment must hold the 4 port bytes of TCP/UDP.
  - IPv6: the extension headers hop-by-hop (0), routing (43), destination options (60),
    fragment (44) and authentication (51) are walked, at most MAX_EXTENSIONS of them; a fragment
    header with a non-zero offset means `NOT_FIRST_FRAGMENT`.
  - TCP and UDP give their ports; every other protocol has none (sport = dport = None).

Anything shorter than its headers say is malformed: None. A non-first fragment can only be
reassembled by the receiving kernel together with its first fragment, which the policy judges
by its ports, and Linux discards overlapping fragments, so a later fragment cannot rewrite the
ports the first one showed (an offset is a multiple of 8 bytes; ports are the first 4).

`icmp_inner(packet, flow)` reads the packet quoted by an ICMP or ICMPv6 error message (the
header of the packet the error is about, and its first 8 bytes), as a Flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "ICMP",
    "ICMPV6",
    "ICMP_ERRORS",
    "MAX_EXTENSIONS",
    "NOT_FIRST_FRAGMENT",
    "TCP",
    "UDP",
    "Flow",
    "NotFirstFragment",
    "flow_of",
    "icmp_inner",
]

TCP: Final = 6
UDP: Final = 17
ICMP: Final = 1
ICMPV6: Final = 58
_PORTED = (TCP, UDP)
_V6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options: length (n + 1) * 8
_V6_FRAGMENT = 44
_V6_AUTH = 51  # length (n + 2) * 4
MAX_EXTENSIONS = 8
# error messages that quote the packet they are about: v4 unreachable, time exceeded, parameter
# problem; v6 unreachable, packet too big, time exceeded, parameter problem
ICMP_ERRORS: Final = {ICMP: frozenset((3, 11, 12)), ICMPV6: frozenset((1, 2, 3, 4))}


class NotFirstFragment:
    """The marker type of `NOT_FIRST_FRAGMENT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_FIRST_FRAGMENT"


NOT_FIRST_FRAGMENT: Final = NotFirstFragment()


@dataclass(frozen=True, slots=True)
class Flow:
    """What the policy knows of one packet: `src` and `dst` packed (4 or 16 bytes)."""

    proto: int
    src: bytes
    dst: bytes
    sport: int | None = None
    dport: int | None = None
    transport: int = 0  # offset of the transport header in the packet

    def reply(self) -> Flow:
        """The same flow seen from its other end."""
        return Flow(self.proto, self.dst, self.src, self.dport, self.sport, self.transport)


def _ports(packet: bytes | bytearray | memoryview, proto: int, src: bytes, dst: bytes, off: int,
           *, quoted: bool = False) -> Flow | None:
    if proto in _PORTED:
        if len(packet) < off + 4:
            return None
        return Flow(proto, src, dst, int.from_bytes(packet[off:off + 2], "big"),
                    int.from_bytes(packet[off + 2:off + 4], "big"), off)
    if proto in ICMP_ERRORS and not quoted and len(packet) < off + 4:
        return None  # an ICMP message without its type and code
    return Flow(proto, src, dst, None, None, off)


def flow_of(packet: bytes | bytearray | memoryview, *,
            quoted: bool = False) -> Flow | NotFirstFragment | None:
    """The packet's Flow, NOT_FIRST_FRAGMENT, or None when it is malformed. `quoted`: a packet
    quoted inside an ICMP error (its total length field is not checked against what is there)."""
    n = len(packet)
    if n < 1:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or n < ihl:
            return None
        if ((packet[6] & 0x1F) << 8) | packet[7]:
            return NOT_FIRST_FRAGMENT
        return _ports(packet, packet[9], bytes(packet[12:16]), bytes(packet[16:20]), ihl, quoted=quoted)
    if version == 6:
        if n < 40:
            return None
        src, dst = bytes(packet[8:24]), bytes(packet[24:40])
        proto, off = packet[6], 40
        for _ in range(MAX_EXTENSIONS):
            if proto in _V6_EXTENSIONS:
                if n < off + 2:
                    return None
                proto, off = packet[off], off + (packet[off + 1] + 1) * 8
            elif proto == _V6_FRAGMENT:
                if n < off + 8:
                    return None
                if (int.from_bytes(packet[off + 2:off + 4], "big") >> 3) != 0:
                    return NOT_FIRST_FRAGMENT
                proto, off = packet[off], off + 8
            elif proto == _V6_AUTH:
                if n < off + 2:
                    return None
                proto, off = packet[off], off + (packet[off + 1] + 2) * 4
            else:
                break
        else:
            return None  # more extension headers than we walk
        if n < off:
            return None
        return _ports(packet, proto, src, dst, off, quoted=quoted)
    return None


def icmp_inner(packet: bytes | bytearray | memoryview, flow: Flow) -> Flow | None:
    """The flow of the packet an ICMP/ICMPv6 error quotes (None if `flow` is not such an error or
    the quote is unreadable). The quote starts 8 bytes into the ICMP message."""
    errors = ICMP_ERRORS.get(flow.proto)
    off = flow.transport
    if errors is None or len(packet) < off + 8 or packet[off] not in errors:
        return None
    if (flow.proto == ICMP) != (len(flow.src) == 4):
        return None  # ICMP in IPv6 or ICMPv6 in IPv4
    inner = flow_of(packet[off + 8:], quoted=True)
    return inner if isinstance(inner, Flow) else None
