"""policy/filter.py: the stateful filter on a numbered story of one node's packets, against a naive
twin (a set of started flows and a scan of the rules) on random packets and policy changes, and
its bounds (idle flows forgotten, memory capped)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.policy import filter as filt
from nodeagent.policy.filter import FLOW_IDLE_S, PacketFilter, flow_key, reverse_key
from nodeagent.policy.packet import Flow, flow_of
from nodeagent.protocol.policy import Policy, Rule, check_policy, check_rule
from tests.nodeagent.policy.packets import ACK, ICMP, RST, SYN, TCP, echo4, icmp_error4, tcp4, udp4, v4
from tests.nodeagent.policy.test_index import naive_allows

A, B, C = "10.10.10.1", "10.10.10.2", "10.10.10.3"  # this node is B


def policy(*rules: Rule) -> Policy:
    return check_policy("deny", list(rules))


SSH_FROM_A = check_rule([A], [B], "tcp", [(22, 22)])
WEB_TO_C = check_rule([B], [C], "tcp", [(80, 80)])
DNS_TO_C = check_rule([B], [C], "udp", [(53, 53)])
PING_A = check_rule([B], [A], "icmp", [])


def test_a_policy_that_allows_everything_needs_no_filter():
    with pytest.raises(ValueError):
        PacketFilter(Policy(), 0.0)


def test_the_story_of_one_node():
    f = PacketFilter(policy(SSH_FROM_A, WEB_TO_C, DNS_TO_C, PING_A), now=0.0)
    # 1. a rule lets A in on 22; the flow's next packets take the fast path
    assert f.admit(tcp4(A, B, 40000, 22))
    assert tcp4(A, B, 40000, 22)[12:24] in f.tcp.cur_in
    assert f.admit(tcp4(A, B, 40000, 22))
    # 2. another port, another protocol, another peer: refused
    assert not f.admit(tcp4(A, B, 40000, 23))
    assert not f.admit(udp4(A, B, 40000, 22))
    assert not f.admit(tcp4(C, B, 81, 50000))
    # 3. B starts a flow to C:80: its reply comes in; C may not open a connection to B
    f.track(tcp4(B, C, 50000, 80, SYN))
    assert f.admit(tcp4(C, B, 80, 50000, SYN | ACK))
    assert not f.admit(tcp4(C, B, 80, 50001, SYN))
    assert not f.admit(tcp4(C, B, 81, 50000))  # not from the port B may reach
    # 4. B answers A's ssh flow: that does not make it B's flow
    f.track(tcp4(B, A, 22, 40000))
    assert f.tcp.cur_out[tcp4(B, A, 22, 40000)[12:24]] == filt.IN
    # 5. B sends where no rule lets it start: the answer is refused
    f.track(tcp4(B, A, 50000, 9999))
    assert f.tcp.cur_out[tcp4(B, A, 50000, 9999)[12:24]] == filt.NONE
    assert not f.admit(tcp4(A, B, 9999, 50000))
    # 6. udp and icmp replies the same way
    f.track(udp4(B, C, 33000, 53))
    assert f.admit(udp4(C, B, 53, 33000))
    assert not f.admit(udp4(C, B, 53, 33001))
    f.track(echo4(B, A))
    assert f.admit(echo4(A, B, reply=True))
    assert not f.admit(echo4(C, B, reply=True))
    # 7. an ICMP error about B's packet to C comes in; one about a packet B never sent does not
    assert f.admit(icmp_error4(C, B, tcp4(B, C, 50000, 80)))
    assert not f.admit(icmp_error4(C, B, tcp4(B, C, 50000, 81)))
    assert not f.admit(icmp_error4(C, B, tcp4(A, C, 50000, 80)))  # quotes someone else's packet
    # 8. later fragments have nothing to judge: the first one was judged
    assert f.admit(v4(C, B, 6, b"x" * 16, frag_offset=100))
    assert not f.admit(b"\x45\x00")  # malformed


def test_a_new_policy_cuts_the_flows_it_no_longer_allows_and_keeps_the_others():
    f = PacketFilter(policy(SSH_FROM_A, WEB_TO_C), now=0.0)
    assert f.admit(tcp4(A, B, 40000, 22))
    f.track(tcp4(B, A, 22, 40000))
    f.track(tcp4(B, C, 50000, 80))
    g = PacketFilter(policy(WEB_TO_C), now=1.0, previous=f)
    # the ssh rule is gone: A's flow is cut at its next packet, and B's replies do not reopen it
    assert not g.admit(tcp4(A, B, 40000, 22))
    g.track(tcp4(B, A, 22, 40000))
    assert not g.admit(tcp4(A, B, 40000, 22))
    # B's web flow to C is still allowed: C's reply is let in even before B sends again
    assert g.admit(tcp4(C, B, 80, 50000))
    # and with the rule back, A gets in again
    h = PacketFilter(policy(SSH_FROM_A, WEB_TO_C), now=2.0, previous=g)
    assert h.admit(tcp4(A, B, 40000, 22))


def test_a_flow_b_started_is_cut_when_starting_it_is_no_longer_allowed():
    f = PacketFilter(policy(WEB_TO_C), now=0.0)
    f.track(tcp4(B, C, 50000, 80))
    g = PacketFilter(policy(SSH_FROM_A), now=1.0, previous=f)
    assert not g.admit(tcp4(C, B, 80, 50000))


def test_a_tcp_reply_comes_in_even_when_the_table_does_not_know_its_connection():
    """Started before the node's policy filtered, or forgotten while idle: a segment that is not a
    connection request, from the port a rule lets this node reach, is a reply."""
    f = PacketFilter(policy(WEB_TO_C), now=0.0)
    assert f.admit(tcp4(C, B, 80, 50000, ACK))
    assert f.admit(tcp4(C, B, 80, 50001, RST))
    assert not f.admit(tcp4(C, B, 80, 50002, SYN))  # a connection request is judged by the rules
    assert not f.admit(tcp4(A, B, 80, 50000, ACK))  # B may not reach A:80
    assert not f.admit(v4(C, B, TCP, bytes(12)))  # too short to tell


def test_idle_flows_are_forgotten_between_one_and_two_idle_periods():
    idle = FLOW_IDLE_S["udp"]
    f = PacketFilter(policy(DNS_TO_C), now=0.0)
    f.track(udp4(B, C, 33000, 53))
    f.tick(idle)  # one rotation: the flow is in `old`, and a reply brings it back
    assert f.admit(udp4(C, B, 53, 33000))
    f.tick(2 * idle)
    f.tick(3 * idle)  # two rotations without a packet: forgotten
    assert not f.admit(udp4(C, B, 53, 33000))
    f.tick(3.5 * idle)  # not due yet: no rotation
    assert f.udp.rotations == 3


def test_memory_is_bounded_whatever_a_peer_sends(monkeypatch):
    monkeypatch.setitem(filt.FLOW_LIMIT, "udp", 100)
    f = PacketFilter(policy(check_rule([A], [B], "udp", [])), now=0.0)
    for port in range(1, 1001):
        assert f.admit(udp4(A, B, port, 53))
    assert len(f.udp.cur_in) <= 100 and len(f.udp.old_in) <= 100
    assert len(f.udp.cur_out) <= 100 and len(f.udp.old_out) <= 100
    assert f.udp.rotations >= 9


def test_flow_keys_reverse_for_every_family():
    for packet in (tcp4(A, B, 1, 2), echo4(A, B)):
        flow = flow_of(packet)
        assert isinstance(flow, Flow)
        assert reverse_key(flow_key(flow)) == flow_key(flow.reply())
    six = Flow(17, ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed, 1, 2)
    assert reverse_key(flow_key(six)) == flow_key(six.reply())
    with pytest.raises(ValueError):
        reverse_key(b"1234")


# ----------------------------------------------------------------------------- the naive twin


class NaiveFilter:
    """The filter's meaning without generations: the flows this node started (and a rule let it
    start) in a set; a packet passes when a rule allows it, or, unless it is a TCP connection
    request, when it answers such a flow or is a TCP segment this node may send the other way."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.started: set[tuple] = set()

    @staticmethod
    def _fields(packet: bytes) -> tuple:
        flow = flow_of(packet)
        assert isinstance(flow, Flow)
        return (flow.proto, str(ipaddress.ip_address(flow.src)), str(ipaddress.ip_address(flow.dst)),
                flow.sport, flow.dport)

    def _allows(self, proto, src, dst, dport) -> bool:
        return naive_allows(self.rules, src, dst, proto, dport)

    def track(self, packet: bytes) -> None:
        proto, src, dst, sport, dport = self._fields(packet)
        if self._allows(proto, src, dst, dport):
            self.started.add((proto, src, dst, sport, dport))

    def admit(self, packet: bytes) -> bool:
        proto, src, dst, sport, dport = self._fields(packet)
        if self._allows(proto, src, dst, dport):
            return True
        if proto == 6 and packet[20 + 13] & SYN and not packet[20 + 13] & ACK:
            return False  # a connection request: the rules only
        if (proto, dst, src, dport, sport) in self.started:
            return True
        return proto == 6 and self._allows(proto, dst, src, sport)

    def change(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.started = {f for f in self.started if self._allows(f[0], f[1], f[2], f[4])}


PEERS = [A, C, "10.10.10.4"]
RULE_POOL = [SSH_FROM_A, WEB_TO_C, DNS_TO_C, PING_A,
             check_rule([A, C], [B], "udp", [(1000, 2000)]),
             check_rule(["10.10.10.0/24"], [B], "tcp", [(443, 443)]),
             check_rule([B], ["10.10.10.0/24"], "any", []),
             check_rule([B], [A], "tcp", [(22, 22)])]


@st.composite
def steps(draw):
    out = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["in", "in", "out", "out", "change"]))
        if kind == "change":
            out.append(("change", draw(st.lists(st.sampled_from(RULE_POOL), max_size=4))))
            continue
        peer = draw(st.sampled_from(PEERS))
        proto = draw(st.sampled_from(["tcp", "udp", "icmp"]))
        mine, theirs = draw(st.sampled_from([22, 80, 53, 443, 1500, 40000])), \
            draw(st.sampled_from([22, 80, 53, 443, 1500, 40000]))
        if proto == "icmp":
            packet = echo4(peer, B) if kind == "in" else echo4(B, peer)
        else:
            if proto == "tcp":
                flags = draw(st.sampled_from([SYN, SYN | ACK, ACK, RST]))
                ends = (peer, B, theirs, mine) if kind == "in" else (B, peer, mine, theirs)
                packet = tcp4(*ends, flags)
            else:
                packet = udp4(peer, B, theirs, mine) if kind == "in" else udp4(B, peer, mine, theirs)
        out.append((kind, packet))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(RULE_POOL), max_size=4), steps())
def test_the_filter_agrees_with_its_naive_twin(first, story):
    f = PacketFilter(policy(*first), now=0.0)
    twin = NaiveFilter(first)
    for i, (kind, what) in enumerate(story):
        if kind == "change":
            f = PacketFilter(policy(*what), now=float(i), previous=f)
            twin.change(what)
        elif kind == "out":
            f.track(what)
            twin.track(what)
        else:
            assert f.admit(what) == twin.admit(what), (i, kind, what.hex())


def test_icmp_echo_is_one_flow_per_pair():
    f = PacketFilter(policy(PING_A), now=0.0)
    f.track(echo4(B, A))
    assert f.admit(echo4(A, B, reply=True))
    a, b = (ipaddress.ip_address(x).packed for x in (A, B))
    assert flow_of(echo4(A, B)) == Flow(ICMP, a, b, None, None, 20)
