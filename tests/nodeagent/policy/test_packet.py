"""policy/packet.py: the fields of a packet, on a numbered table of IPv4 and IPv6 packets (options,
extension headers, fragments, truncations), and the packet an ICMP error quotes."""

from __future__ import annotations

import ipaddress

import pytest

from nodeagent.policy.packet import NOT_FIRST_FRAGMENT, Flow, flow_of, icmp_inner
from tests.nodeagent.policy.packets import (
    ICMP,
    ICMPV6,
    TCP,
    UDP,
    echo4,
    icmp_error4,
    ports,
    tcp4,
    udp4,
    v4,
    v6,
)

A4, B4 = ipaddress.IPv4Address("10.0.0.1").packed, ipaddress.IPv4Address("10.0.0.2").packed
A6, B6 = ipaddress.IPv6Address("fd00::1").packed, ipaddress.IPv6Address("fd00::2").packed
HOP = (0, b"\0" + b"\0" * 6)  # hop-by-hop, 8 bytes
DST8 = (60, b"\0" + b"\0" * 6)
FRAG0 = (44, b"\0" + b"\0\0" + b"\0\0\0\x01")  # offset 0
FRAG8 = (44, b"\0" + (8 << 3).to_bytes(2, "big") + b"\0\0\0\x01")  # offset 8 * 8 bytes

# numbered: (case, packet, expected)
CASES = [
    (1, tcp4("10.0.0.1", "10.0.0.2", 40000, 22), Flow(TCP, A4, B4, 40000, 22, 20)),
    (2, udp4("10.0.0.1", "10.0.0.2", 5353, 53), Flow(UDP, A4, B4, 5353, 53, 20)),
    (3, echo4("10.0.0.1", "10.0.0.2"), Flow(ICMP, A4, B4, None, None, 20)),
    (4, v4("10.0.0.1", "10.0.0.2", 47, b"gre!"), Flow(47, A4, B4, None, None, 20)),
    (5, v4("10.0.0.1", "10.0.0.2", TCP, ports(1, 2), options=b"\x01" * 8), Flow(TCP, A4, B4, 1, 2, 28)),
    (6, v4("10.0.0.1", "10.0.0.2", TCP, ports(1, 2), more=True), Flow(TCP, A4, B4, 1, 2, 20)),  # 1st fragment
    (7, v4("10.0.0.1", "10.0.0.2", TCP, b"x" * 16, frag_offset=3), NOT_FIRST_FRAGMENT),
    (8, v4("10.0.0.1", "10.0.0.2", TCP, b"\0\x01"), None),  # ports cut off
    (9, v4("10.0.0.1", "10.0.0.2", TCP, b"", options=b"\x01" * 8)[:24], None),  # shorter than its IHL
    (10, b"\x45" + b"\0" * 10, None),
    (11, b"", None),
    (12, b"\x10" + b"\0" * 40, None),  # version 1
    (13, v6("fd00::1", "fd00::2", TCP, ports(443, 8443)), Flow(TCP, A6, B6, 443, 8443, 40)),
    (14, v6("fd00::1", "fd00::2", UDP, ports(1, 53), extensions=[HOP, DST8]), Flow(UDP, A6, B6, 1, 53, 56)),
    (15, v6("fd00::1", "fd00::2", UDP, ports(1, 53), extensions=[FRAG0]), Flow(UDP, A6, B6, 1, 53, 48)),
    (16, v6("fd00::1", "fd00::2", UDP, b"x" * 8, extensions=[FRAG8]), NOT_FIRST_FRAGMENT),
    (17, v6("fd00::1", "fd00::2", ICMPV6, b"\x80\0\0\0"), Flow(ICMPV6, A6, B6, None, None, 40)),
    (18, v6("fd00::1", "fd00::2", TCP, b"")[:39], None),
    (19, v6("fd00::1", "fd00::2", UDP, ports(1, 53), extensions=[HOP] * 9), None),  # too many extensions
    (20, v6("fd00::1", "fd00::2", UDP, b"", extensions=[HOP])[:44], None),  # extension cut off
    (21, v4("10.0.0.1", "10.0.0.2", ICMP, b"\x03"), None),  # an ICMP message without its code
]


@pytest.mark.parametrize(("case", "packet", "expected"), CASES, ids=[f"case{c[0]}" for c in CASES])
def test_the_case_table(case, packet, expected):
    assert flow_of(packet) == expected


def test_a_flow_seen_from_the_other_end():
    f = Flow(TCP, A4, B4, 40000, 22, 20)
    assert f.reply() == Flow(TCP, B4, A4, 22, 40000, 20)
    assert f.reply().reply() == f


def test_an_icmp_error_quotes_the_packet_it_is_about():
    sent = udp4("10.0.0.1", "10.0.0.2", 5353, 53)
    error = icmp_error4("10.0.0.2", "10.0.0.1", sent)
    flow = flow_of(error)
    assert isinstance(flow, Flow)
    assert icmp_inner(error, flow) == Flow(UDP, A4, B4, 5353, 53, 20)


def test_an_echo_or_a_short_error_quotes_nothing():
    echo = echo4("10.0.0.2", "10.0.0.1")
    assert icmp_inner(echo, flow_of(echo)) is None
    short = v4("10.0.0.2", "10.0.0.1", ICMP, bytes((3, 3, 0, 0)))
    assert icmp_inner(short, flow_of(short)) is None
