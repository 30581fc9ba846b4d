"""The access policy in the data path (inbound step 9, outbound step 3): refused packets are dropped and
counted `policy` (node) and `denied_frames` (peer), replies to this node's own flows come in, a
GRO run asks the policy once, and a new filter cuts a flow at its next packet."""

from __future__ import annotations

import os
import struct

import pytest

from nodeagent.policy.filter import PacketFilter
from nodeagent.protocol.policy import check_policy, check_rule
from nodeagent.status import peer_counters
from tests.nodeagent.policy.packets import ACK, SYN, tcp4, udp4
from tests.nodeagent.tunnel.test_datapath import Node, pair, tcp_super_packet

A, B = "10.10.10.1", "10.10.10.2"
DNS_FROM_A = check_rule([A], [B], "udp", [(53, 53)])
IPERF_FROM_A = check_rule([A], [B], "tcp", [(5201, 5201)])
WEB_FROM_B = check_rule([B], [A], "tcp", [(80, 80)])


class CountingFilter(PacketFilter):
    __slots__ = ("asked",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked = 0

    def admit(self, packet: bytes) -> bool:
        self.asked += 1
        return super().admit(packet)


def nodes(vnet: bool = False):
    a, b = Node("a", A), Node("b", B)
    a.know(b)
    b.know(a)
    a.start(vnet=vnet)
    b.start(vnet=vnet)
    pair(a, b)
    return a, b


@pytest.fixture
def ab():
    made = []

    def make(vnet: bool = False):
        a, b = nodes(vnet)
        made.extend((a, b))
        return a, b

    yield make
    for n in made:
        n.udp.close()
        n.tun.close()
        n.tun_app.close()


def test_a_refused_packet_is_dropped_and_counted_and_an_allowed_one_crosses(ab):
    a, b = ab()
    b.dp.filter = PacketFilter(check_policy("deny", [DNS_FROM_A]), now=0.0)
    allowed, refused = udp4(A, B, 40000, 53), udp4(A, B, 40000, 54)
    a.inject(allowed)
    a.inject(refused)
    b.dp.on_udp()
    assert b.delivered() == [allowed]
    assert b.dp.drops.policy == 1
    peer = b.peers["a"]
    assert peer.stats.denied_frames == 1 and peer.stats.rx_frames == 2  # received, then refused
    assert peer_counters(peer, now=0.0).denied_frames == 1
    assert a.dp.drops.policy == 0  # outbound packets are never dropped by the policy


def test_the_reply_to_a_flow_this_node_started_comes_in(ab):
    a, b = ab()
    b.dp.filter = PacketFilter(check_policy("deny", [WEB_FROM_B]), now=0.0)
    b.inject(tcp4(B, A, 50000, 80, SYN))  # b opens a connection to a:80 (step 3 of outbound notes it)
    a.dp.on_udp()
    assert len(a.delivered()) == 1
    reply, stranger = tcp4(A, B, 80, 50000, SYN | ACK), tcp4(A, B, 80, 50001, SYN)  # a may not open one
    a.inject(reply)
    a.inject(stranger)
    b.dp.on_udp()
    assert b.delivered() == [reply] and b.dp.drops.policy == 1


def test_a_gro_run_asks_the_policy_once_and_a_refused_run_is_dropped_segment_by_segment(ab):
    a, b = ab(vnet=True)
    b.dp.filter = CountingFilter(check_policy("deny", [IPERF_FROM_A]), now=0.0)
    payload = os.urandom(10 * 1000 + 123)
    a.inject(tcp_super_packet(payload, 1000))  # 11 segments of one flow to b:5201
    b.dp.on_udp()
    (written,) = b.delivered()
    assert written[10 + 40:] == payload
    assert b.dp.filter.asked == 1  # the run's first segment; the other ten extend the run
    # the rule is removed: the next run of the flow is cut, every segment counted
    b.dp.filter = CountingFilter(check_policy("deny", [DNS_FROM_A]), now=1.0, previous=b.dp.filter)
    a.inject(tcp_super_packet(payload, 1000))
    b.dp.on_udp()
    assert b.delivered() == []
    assert b.dp.drops.policy == 11 and b.peers["a"].stats.denied_frames == 11


def test_without_a_filter_nothing_is_asked_or_dropped(ab):
    a, b = ab()
    assert b.dp.filter is None
    a.inject(udp4(A, B, 1, 2))
    b.dp.on_udp()
    assert len(b.delivered()) == 1 and b.dp.drops.policy == 0


def test_a_refused_packet_does_not_break_the_run_it_interrupts(ab):
    a, b = ab(vnet=True)
    b.dp.filter = PacketFilter(check_policy("deny", [IPERF_FROM_A]), now=0.0)
    segments = []
    for i in range(3):
        tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 7 + i * 100, 1, 5 << 4, 0x10, 500, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + 100, 1, 0x4000, 64, 6, 0, bytes([10, 10, 10, 1]),
                         bytes([10, 10, 10, 2]))
        segments.append(ip + tcp + bytes([i]) * 100)
    plain = bytes(10)  # a's TUN speaks virtio_net_hdr too: a zero header, no offload
    a.inject(plain + segments[0])
    a.inject(plain + udp4(A, B, 9, 9))  # refused, between two segments of the permitted flow
    a.inject(plain + segments[1])
    a.inject(plain + segments[2])
    b.dp.on_udp()
    written = b.delivered()
    assert b.dp.drops.policy == 1
    assert len(written) == 1  # one GSO write: the refused packet did not end the run
    assert b"".join(w[10 + 40:] for w in written) == bytes([0]) * 100 + bytes([1]) * 100 + bytes([2]) * 100
