"""Packets for the policy tests: IPv4 and IPv6 headers with the fields the policy reads."""

from __future__ import annotations

import ipaddress

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58


def v4(src: str, dst: str, proto: int, payload: bytes = b"", *, frag_offset: int = 0, more: bool = False,
       options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    h = bytearray(20)
    h[0] = 0x40 | ihl
    total = ihl * 4 + len(payload)
    h[2:4] = total.to_bytes(2, "big")
    h[6:8] = ((0x2000 if more else 0) | frag_offset).to_bytes(2, "big")
    h[8] = 64
    h[9] = proto
    h[12:16] = ipaddress.IPv4Address(src).packed
    h[16:20] = ipaddress.IPv4Address(dst).packed
    return bytes(h) + options + payload


def v6(src: str, dst: str, proto: int, payload: bytes = b"", *,
       extensions: list[tuple[int, bytes]] | tuple = ()) -> bytes:
    """`extensions`: (header type, its body after the next-header byte) in order; the first
    header's type goes in the fixed header."""
    chain = [t for t, _ in extensions] + [proto]
    body = b""
    for (_, raw), nxt in zip(extensions, chain[1:], strict=True):
        body += bytes((nxt,)) + raw
    h = bytearray(40)
    h[0] = 0x60
    h[4:6] = (len(body) + len(payload)).to_bytes(2, "big")
    h[6] = chain[0]
    h[7] = 64
    h[8:24] = ipaddress.IPv6Address(src).packed
    h[24:40] = ipaddress.IPv6Address(dst).packed
    return bytes(h) + body + payload


def ports(sport: int, dport: int, rest: bytes = b"\0" * 16) -> bytes:
    return sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + rest


SYN, ACK, RST = 0x02, 0x10, 0x04


def tcp4(src: str, dst: str, sport: int, dport: int, flags: int = ACK) -> bytes:
    """A TCP segment (20-byte header); `flags` ACK by default: a segment of an open connection."""
    return v4(src, dst, TCP, ports(sport, dport, bytes(9) + bytes((flags,)) + bytes(6)))


def udp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return v4(src, dst, UDP, ports(sport, dport, b"\0\x08\0\0"))


def echo4(src: str, dst: str, reply: bool = False) -> bytes:
    return v4(src, dst, ICMP, bytes((0 if reply else 8, 0, 0, 0, 0, 1, 0, 1)))


def icmp_error4(src: str, dst: str, quoted: bytes, type_: int = 3, code: int = 3) -> bytes:
    return v4(src, dst, ICMP, bytes((type_, code, 0, 0, 0, 0, 0, 0)) + quoted[:28])
