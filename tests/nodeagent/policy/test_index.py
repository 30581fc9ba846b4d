"""The compiled rule lookup (policy/index.py), checked against a naive twin that scans every rule, on
a numbered table of cases and on random rules and packets."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.policy.index import RuleIndex
from nodeagent.protocol.policy import Rule, check_rule


def naive_allows(rules: list[Rule], src: str, dst: str, proto: int, dport: int | None) -> bool:
    """Straight from the definition (protocol/policy.py): some rule whose prefixes hold both ends,
    whose protocol is the packet's and whose ports hold its destination port."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    names = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}
    def holds(prefixes, address) -> bool:
        nets = [ipaddress.ip_network(p) for p in prefixes]
        return any(n.version == address.version and address in n for n in nets)

    for r in rules:
        if not holds(r.src, s) or not holds(r.dst, d):
            continue
        if r.proto != "any" and r.proto != names.get(proto):
            continue
        if r.ports and (dport is None or not any(lo <= dport <= hi for lo, hi in r.ports)):
            continue
        return True
    return False


def naive_reaches(rules: list[Rule], src: str, dst: str) -> bool:
    """Some rule whose prefixes hold both ends, whatever its protocol and ports."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)

    def holds(prefixes, address) -> bool:
        return any(n.version == address.version and address in n for n in map(ipaddress.ip_network, prefixes))

    return any(holds(r.src, s) and holds(r.dst, d) for r in rules)


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def rule(src, dst, proto="any", ports=()) -> Rule:
    return check_rule(list(src), list(dst), proto, list(ports))


RULES = [
    rule(["10.10.10.1"], ["10.10.10.2"], "tcp", [(22, 22)]),
    rule(["10.10.10.0/24"], ["10.10.10.2"], "tcp", [(8000, 8100)]),
    rule(["10.10.0.0/16"], ["10.10.10.0/24"], "udp", [(53, 53)]),
    rule(["10.10.10.3"], ["10.10.10.2", "192.168.5.0/24"], "any"),
    rule(["10.10.10.4"], ["10.10.10.2"], "icmp"),
    rule(["192.168.9.0/24"], ["10.10.10.2"], "tcp"),
    rule(["fd00::1"], ["fd00::2"], "tcp", [(443, 443), (80, 80)]),
    rule(["0.0.0.0/0"], ["10.10.10.9"], "udp", [(5000, 5999)]),
]

# numbered: (case, src, dst, proto, dport, allowed)
CASES = [
    (1, "10.10.10.1", "10.10.10.2", 6, 22, True),          # the exact rule
    (2, "10.10.10.1", "10.10.10.2", 6, 23, False),         # another port
    (3, "10.10.10.1", "10.10.10.2", 17, 22, False),        # another protocol
    (4, "10.10.10.1", "10.10.10.2", 6, 8050, True),        # the wider source's range (pushed down)
    (5, "10.10.10.7", "10.10.10.2", 6, 8050, True),
    (6, "10.10.10.7", "10.10.10.2", 6, 22, False),         # 22 is only for .1
    (7, "10.10.99.1", "10.10.10.2", 17, 53, True),         # the /16 source to the /24 destination
    (8, "10.10.99.1", "10.10.10.5", 17, 53, True),
    (9, "10.10.10.1", "10.10.10.2", 17, 53, True),         # .1 inherits the /16's udp/53 on .2
    (10, "10.10.10.3", "10.10.10.2", 6, 1, True),          # any protocol, any port
    (11, "10.10.10.3", "10.10.10.2", 47, None, True),      # GRE too
    (12, "10.10.10.3", "192.168.5.7", 17, 9, True),        # a routed destination prefix
    (13, "10.10.10.3", "192.168.6.7", 17, 9, False),
    (14, "10.10.10.4", "10.10.10.2", 1, None, True),       # icmp
    (15, "10.10.10.4", "10.10.10.2", 6, 22, False),
    (16, "192.168.9.9", "10.10.10.2", 6, 65535, True),     # tcp without ports: every port
    (17, "fd00::1", "fd00::2", 6, 80, True),
    (18, "fd00::1", "fd00::2", 6, 81, False),
    (19, "10.10.10.4", "fd00::2", 58, None, False),        # no IPv6 rule for that source
    (20, "8.8.8.8", "10.10.10.9", 17, 5500, True),         # 0.0.0.0/0 covers everyone
    (21, "8.8.8.8", "10.10.10.9", 17, 6000, False),
    (22, "10.10.10.1", "10.10.10.9", 17, 5001, True),
    (23, "10.10.10.1", "10.10.10.2", 6, None, False),      # a port rule needs a port
    (24, "10.10.10.1", "10.10.10.8", 6, 22, False),        # nothing for .8
]


@pytest.mark.parametrize(("case", "src", "dst", "proto", "dport", "allowed"), CASES,
                         ids=[f"case{c[0]}" for c in CASES])
def test_the_case_table(case, src, dst, proto, dport, allowed):
    index = RuleIndex.build(RULES)
    assert index.allows(packed(src), packed(dst), proto, dport) is allowed
    assert naive_allows(RULES, src, dst, proto, dport) is allowed


# numbered: (case, src, dst, reaches): whether any packet at all may go from src to dst
REACH_CASES = [
    (1, "10.10.10.1", "10.10.10.2", True),      # a tcp/22 rule is enough
    (2, "10.10.10.2", "192.168.9.1", False),    # rules have a direction (192.168.9.0/24 -> .2)
    (3, "10.10.10.7", "10.10.10.2", True),      # the /24 source's tcp range
    (4, "10.10.99.1", "10.10.10.5", True),      # the /16's udp/53 to the /24
    (5, "10.10.99.1", "10.10.11.5", False),     # outside the destination /24
    (6, "10.10.10.4", "10.10.10.2", True),      # icmp only
    (7, "10.10.10.3", "192.168.5.7", True),     # a routed destination prefix
    (8, "10.10.10.3", "192.168.6.7", False),
    (9, "fd00::1", "fd00::2", True),
    (10, "fd00::2", "fd00::1", False),
    (11, "8.8.8.8", "10.10.10.9", True),        # 0.0.0.0/0 covers everyone
    (12, "10.10.10.1", "10.10.12.8", False),    # nothing for .12.8
    (13, "11.0.0.1", "10.10.10.2", False),      # no rule names this source for .2
]


@pytest.mark.parametrize(("case", "src", "dst", "reaches"), REACH_CASES,
                         ids=[f"case{c[0]}" for c in REACH_CASES])
def test_the_reach_table(case, src, dst, reaches):
    assert RuleIndex.build(RULES).reaches(packed(src), packed(dst)) is reaches
    assert naive_reaches(RULES, src, dst) is reaches


def test_no_rules_allow_nothing():
    index = RuleIndex.build([])
    assert not index.allows(packed("10.0.0.1"), packed("10.0.0.2"), 6, 22)
    assert not index.reaches(packed("10.0.0.1"), packed("10.0.0.2"))
    assert index.rule_count == 0


# ----------------------------------------------------------------------------- random rules and packets

V4 = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "10.1.2.4/32", "10.2.0.0/16", "0.0.0.0/0",
      "10.1.2.0/25", "192.168.0.0/24"]
V6 = ["fd00::/8", "fd00::/64", "fd00::1/128", "fd00::2/128"]
ADDRESSES = ["10.1.2.3", "10.1.2.4", "10.1.2.200", "10.1.9.9", "10.2.3.4", "10.9.9.9", "192.168.0.1",
             "8.8.8.8", "fd00::1", "fd00::2", "fd00::3", "fd01::1"]
PORTS = [None, 1, 21, 22, 23, 80, 443, 1000, 1023, 1024, 5000, 65535]


@st.composite
def rules(draw) -> list[Rule]:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        prefixes = V4 + V6
        src = draw(st.lists(st.sampled_from(prefixes), min_size=1, max_size=3))
        dst = draw(st.lists(st.sampled_from(prefixes), min_size=1, max_size=3))
        proto = draw(st.sampled_from(["any", "tcp", "udp", "icmp"]))
        ports: list[tuple[int, int]] = []
        if proto in ("tcp", "udp"):
            for _ in range(draw(st.integers(0, 3))):
                lo = draw(st.sampled_from([1, 20, 22, 80, 443, 1000, 1024, 5000]))
                ports.append((lo, lo + draw(st.sampled_from([0, 0, 1, 100, 64000])) if lo < 1500 else lo))
            ports = [(lo, min(hi, 65535)) for lo, hi in ports]
        out.append(rule(src, dst, proto, ports))
    return out


@settings(max_examples=300, deadline=None)
@given(rules(), st.lists(st.tuples(st.sampled_from(ADDRESSES), st.sampled_from(ADDRESSES),
                                   st.sampled_from([1, 6, 17, 47, 58]), st.sampled_from(PORTS)),
                         min_size=1, max_size=30))
def test_the_index_agrees_with_the_naive_twin(rs, packets):
    index = RuleIndex.build(rs)
    for src, dst, proto, dport in packets:
        if ipaddress.ip_address(src).version != ipaddress.ip_address(dst).version:
            continue
        port = dport if proto in (6, 17) else None
        expected = naive_allows(rs, src, dst, proto, port)
        assert index.allows(packed(src), packed(dst), proto, port) == expected, (src, dst, proto, port)


@settings(max_examples=300, deadline=None)
@given(rules(), st.lists(st.tuples(st.sampled_from(ADDRESSES), st.sampled_from(ADDRESSES)),
                         min_size=1, max_size=30))
def test_reaches_agrees_with_the_naive_twin(rs, pairs):
    index = RuleIndex.build(rs)
    for src, dst in pairs:
        if ipaddress.ip_address(src).version != ipaddress.ip_address(dst).version:
            continue
        assert index.reaches(packed(src), packed(dst)) == naive_reaches(rs, src, dst), (src, dst)
