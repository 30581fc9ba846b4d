"""tunnel/toobig.py: the ICMP answer to a packet too big for a narrow path. Every answer is
checked field by field with arithmetic of the tests' own (the checksums by summing the whole
message back to 0xFFFF, test_tso.valid); the cases without an answer each have their own test."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from nodeagent.tunnel.toobig import IPV4_QUOTE_MAX, IPV6_MIN_MTU, too_big
from tests.nodeagent.tunnel.test_tso import valid  # the checksum arithmetic of the test's own

A4, B4 = ipaddress.ip_address("10.10.10.1").packed, ipaddress.ip_address("10.10.10.2").packed
A6, B6 = ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed
DF = 0x4000


def ipv4(size: int, *, flags: int = DF, proto: int = 6, payload_head: bytes = b"") -> bytes:
    body = (payload_head + bytes(range(256)) * 8)[:size - 20]
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 7, flags, 64, proto, 0, A4, B4) + body


def ipv6(size: int, *, next_header: int = 6, payload_head: bytes = b"") -> bytes:
    body = (payload_head + bytes(range(256)) * 8)[:size - 40]
    return struct.pack("!IHBB16s16s", 6 << 28, size - 40, next_header, 64, A6, B6) + body


def test_an_ipv4_packet_with_df_gets_fragmentation_needed_from_its_destination():
    packet = ipv4(1400)
    answer = too_big(packet, 1216)
    assert answer is not None
    ver_ihl, tos, total, _id, frag, ttl, proto, _ck, src, dst = struct.unpack_from("!BBHHHBBH4s4s", answer)
    assert (ver_ihl, proto, total, frag, ttl, tos) == (0x45, 1, len(answer), 0, 64, 0xC0)
    assert (src, dst) == (B4, A4)  # from the destination the sender tried, back to the sender
    assert valid(answer[:20])
    icmp = answer[20:]
    kind, code, _ck, unused, mtu = struct.unpack_from("!BBHHH", icmp)
    assert (kind, code, unused, mtu) == (3, 4, 0, 1216)
    assert valid(icmp)
    assert len(answer) == IPV4_QUOTE_MAX and icmp[8:] == packet[:IPV4_QUOTE_MAX - 28]


def test_a_short_ipv4_packet_is_quoted_whole():
    packet = ipv4(300)
    answer = too_big(packet, 200)
    assert answer is not None and answer[28:] == packet and valid(answer[20:])


def test_an_ipv4_packet_that_may_be_fragmented_gets_no_answer():
    assert too_big(ipv4(1400, flags=0), 1216) is None


def test_a_fragment_past_the_first_gets_no_answer():
    assert too_big(ipv4(1400, flags=DF | 185), 1216) is None


def test_a_packet_that_fits_gets_no_answer():
    assert too_big(ipv4(1216), 1216) is None
    assert too_big(ipv6(1300), 1300) is None


def test_an_icmp_error_is_never_answered_but_an_echo_is():
    for error in (3, 4, 5, 11, 12):
        assert too_big(ipv4(1400, proto=1, payload_head=bytes([error, 0])), 1216) is None
    assert too_big(ipv4(1400, proto=1, payload_head=bytes([8, 0])), 1216) is not None


def test_an_ipv6_packet_gets_packet_too_big_with_a_valid_checksum():
    packet = ipv6(1400)
    answer = too_big(packet, 1300)
    assert answer is not None
    first, length, next_header, hops, src, dst = struct.unpack_from("!IHBB16s16s", answer)
    assert (first >> 28, length, next_header, hops) == (6, len(answer) - 40, 58, 64)
    assert (src, dst) == (B6, A6)
    icmp = answer[40:]
    kind, code, _ck, mtu = struct.unpack_from("!BBHI", icmp)
    assert (kind, code, mtu) == (2, 0, 1300)
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), 58)
    assert valid(pseudo + icmp)
    assert len(answer) == IPV6_MIN_MTU and icmp[8:] == packet[:IPV6_MIN_MTU - 48]


def test_ipv6_is_never_told_less_than_1280():
    assert too_big(ipv6(1400), 1279) is None  # the frame is fragmented instead


def test_an_icmpv6_error_is_never_answered_but_an_echo_request_is():
    for error in (1, 2, 3, 4):
        assert too_big(ipv6(1400, next_header=58, payload_head=bytes([error, 0])), 1300) is None
    assert too_big(ipv6(1400, next_header=58, payload_head=bytes([128, 0])), 1300) is not None


def test_malformed_packets_get_no_answer():
    assert too_big(b"", 100) is None
    assert too_big(bytes([0x45]) + bytes(10), 5) is None  # shorter than an IPv4 header
    assert too_big(bytes([0x44]) + bytes(100), 50) is None  # IHL below 5
    assert too_big(bytes([0x4F]) + bytes(40), 30) is None  # IHL beyond the packet
    assert too_big(bytes([0x60]) + bytes(30), 20) is None  # shorter than an IPv6 header
    assert too_big(bytes([0x50]) + bytes(100), 50) is None  # neither version


@given(st.binary(min_size=0, max_size=1600), st.integers(min_value=68, max_value=1600))
def test_any_bytes_give_none_or_an_answer_within_the_size_caps(packet, mtu):
    answer = too_big(packet, mtu)
    if answer is not None:
        assert len(packet) > mtu
        assert len(answer) <= (IPV4_QUOTE_MAX if answer[0] >> 4 == 4 else IPV6_MIN_MTU)
        assert valid(answer[20:]) if answer[0] >> 4 == 4 else answer[0] >> 4 == 6
