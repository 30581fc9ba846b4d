"""Longest-prefix match, checked against a naive linear scan on random input."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.routing.table import Hop, RouteConflict, RouteTable, RoutingError

UK, BE, SL, MAC = (c * 40 for c in "1234")


class SlowRouter:
    """The naive twin: scan every prefix, keep the longest that contains the address."""

    def __init__(self, routes):
        self.routes = dict(routes)

    def lookup(self, address):
        ip = ipaddress.ip_address(address)
        best = None
        for net, hop in self.routes.items():
            longer = best is None or net.prefixlen > best[0].prefixlen
            if net.version == ip.version and ip in net and longer:
                best = (net, hop)
        return None if best is None else best[1]


MESH = [
    ("10.10.10.3/32", Hop(UK)),
    ("10.10.10.5/32", Hop(BE)),
    ("10.10.10.6/32", Hop(SL, via=UK)),
    ("10.10.10.0/24", Hop(UK)),
    ("192.168.8.0/22", Hop(MAC)),
    ("192.168.9.0/24", Hop(BE)),
    ("0.0.0.0/0", Hop(UK)),
    ("fd00::5/128", Hop(BE)),
    ("fd00::/64", Hop(UK)),
]

# numbered table: (case, destination, expected hop)
CASES = [
    (1, "10.10.10.3", Hop(UK)),
    (2, "10.10.10.5", Hop(BE)),
    (3, "10.10.10.6", Hop(SL, via=UK)),
    (4, "10.10.10.7", Hop(UK)),
    (5, "192.168.9.1", Hop(BE)),
    (6, "192.168.10.1", Hop(MAC)),
    (7, "192.168.12.1", Hop(UK)),
    (8, "8.8.8.8", Hop(UK)),
    (9, "fd00::5", Hop(BE)),
    (10, "fd00::6", Hop(UK)),
    (11, "fd01::1", None),
]


@pytest.mark.parametrize(("case", "dst", "hop"), CASES, ids=[f"case{c[0]}" for c in CASES])
def test_longest_prefix_wins(case, dst, hop):
    table = RouteTable.build(MESH)
    assert table.lookup(dst) == hop
    assert table.lookup_packed(ipaddress.ip_address(dst).packed) == hop


def test_empty_table_routes_nothing():
    t = RouteTable()
    assert t.lookup("10.10.10.1") is None and t.lookup_packed(bytes(16)) is None and len(t) == 0


def test_same_prefix_with_two_hops_is_a_conflict():
    with pytest.raises(RouteConflict):
        RouteTable.build([("10.10.10.0/24", Hop(UK)), ("10.10.10.0/24", Hop(BE))])
    assert len(RouteTable.build([("10.10.10.0/24", Hop(UK)), ("10.10.10.0/24", Hop(UK))])) == 1


def test_insert_replace_and_remove():
    t = RouteTable.build(MESH)
    t.insert("10.10.10.0/24", Hop(MAC))
    assert t.lookup("10.10.10.9") == Hop(MAC)
    assert t.remove("10.10.10.0/24") == Hop(MAC)
    assert t.lookup("10.10.10.9") == Hop(UK)  # falls back to the default route
    assert t.remove("10.10.10.3/32") == Hop(UK)
    assert t.remove("10.10.10.3/32") is None
    assert t.remove("172.16.0.0/12") is None
    assert "10.10.10.5/32" in t and "10.10.10.3/32" not in t and "junk" not in t


def test_routes_lists_every_prefix_once():
    t = RouteTable.build(MESH)
    assert sorted(map(str, (n for n, _ in t.routes()))) == sorted(n for n, _ in MESH)
    assert len(t) == len(MESH)


@pytest.mark.parametrize("bad", ["10.10.10.1/24", "10.10.10.0/33", "nonsense", "", -1, None])
def test_bad_prefixes_are_refused(bad):
    with pytest.raises(RoutingError):
        RouteTable().insert(bad, Hop(UK))


@pytest.mark.parametrize("bad", ["10.10.10", "fd00:::1", b"\x00" * 5, b""])
def test_bad_addresses_are_refused(bad):
    with pytest.raises(RoutingError):
        RouteTable.build(MESH).lookup(bad)


def test_none_is_not_a_hop():
    with pytest.raises(RoutingError):
        RouteTable().insert("10.0.0.0/8", None)


v4_nets = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
    lambda t: ipaddress.ip_network((t[0], t[1]), strict=False))
v6_nets = st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
    lambda t: ipaddress.IPv6Network((t[0], t[1]), strict=False))
# addresses biased towards the prefixes (so matches are common), plus random ones
hops = st.sampled_from([Hop(UK), Hop(BE), Hop(SL, UK), Hop(MAC)])


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.one_of(v4_nets, v6_nets), hops), max_size=40),
    st.lists(st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                       st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)), max_size=20),
    st.data(),
)
def test_table_agrees_with_a_linear_scan(routes, randoms, data):
    routes = dict(routes)  # one hop per prefix (the last given)
    table = RouteTable.build(routes.items())
    slow = SlowRouter(routes)
    probes = list(randoms)
    for net in routes:
        # an address inside each prefix: its network, its broadcast and one random member
        probes += [net.network_address, net.broadcast_address,
                   net.network_address + data.draw(st.integers(0, net.num_addresses - 1))]
    for ip in probes:
        assert table.lookup(ip) == slow.lookup(ip), ip


@settings(max_examples=100)
@given(st.lists(st.tuples(v4_nets, hops), min_size=1, max_size=30), st.data())
def test_removing_routes_agrees_with_a_linear_scan(routes, data):
    routes = dict(routes)
    table = RouteTable.build(routes.items())
    gone = data.draw(st.lists(st.sampled_from(sorted(routes, key=str)), unique=True))
    for net in gone:
        assert table.remove(net) == routes.pop(net)
    slow = SlowRouter(routes)
    for net in list(routes) + gone:
        for ip in (net.network_address, net.broadcast_address):
            assert table.lookup(ip) == slow.lookup(ip)
