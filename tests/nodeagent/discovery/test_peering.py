"""What the agent does with a verified DHT record (discovery/peering.py): the netmap wins, the
server's map is the membership while it is connected, DHT data never grants what the policy denies,
and the lookup throttle. Every branch of `decide`, with records verified as the agent sees them."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from nodeagent.discovery import peering
from nodeagent.discovery.peering import (
    AddPeer,
    Held,
    Ignore,
    LookupThrottle,
    SetEndpoint,
    decide,
    dial_endpoint,
)
from nodeagent.discovery.records import (
    KIND_LOCAL,
    KIND_OBSERVED,
    KIND_REFLEXIVE,
    verify_node_record,
)
from nodeagent.policy.index import RuleIndex
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.policy import check_rule

from .conftest import NOW, endpoint, make_record

ME = "ee" * 20
MY_IP = ipaddress.ip_address("10.10.10.2")


@pytest.fixture(scope="module")
def moved(alice, ca_public):
    """alice's record naming her new address 198.18.7.7."""
    return verify_node_record(make_record(alice, candidates=[endpoint("198.18.7.7")]), ca_public, NOW)


def _netmap(*peers: nm.Peer, revoked=()) -> nm.NetMap:
    me = nm.SelfInfo(peer_id=ME, name="me", overlay_ip="10.10.10.2", prefix_len=24)
    return nm.NetMap(network="lab", serial=4, node=me, peers=tuple(sorted(peers, key=lambda p: p.peer_id)),
                     revoked=tuple(revoked))


def _listed(node, ip="198.18.0.5") -> nm.Peer:
    return nm.Peer(peer_id=node.peer_id, name=node.name, overlay_ip=node.overlay_ip, fingerprint="0" * 64,
                   endpoints=(nm.Endpoint(ip, 8443, 9443),))


def _decide(rec, **kw):
    args = {"own_peer_id": ME, "netmap": None, "rules": None, "own_ip": MY_IP, "server_connected": False,
            "held": None, "endpoint_failing": False, "address_holder": None}
    return decide(rec, **{**args, **kw})


# ----------------------------------------------------------------------------- netmap peers


def test_a_netmap_peers_answering_endpoint_is_never_overridden(moved, alice):
    held = Held(("198.18.0.5", 8443), from_dht=False)
    for connected in (True, False):
        out = _decide(moved, netmap=_netmap(_listed(alice)), server_connected=connected, held=held)
        assert out == Ignore("netmap_wins")


def test_a_netmap_peers_endpoint_that_stopped_answering_gives_way_to_the_records(moved, alice):
    """With the server away: the persisted map may be older than the record."""
    held = Held(("198.18.0.5", 8443), from_dht=False)
    out = _decide(moved, netmap=_netmap(_listed(alice)), server_connected=False, held=held,
                  endpoint_failing=True)
    assert out == SetEndpoint(("198.18.7.7", 8443))


def test_a_netmap_peer_without_an_endpoint_takes_the_records(moved, alice):
    out = _decide(moved, netmap=_netmap(_listed(alice)), held=Held(None, from_dht=False),
                  server_connected=False)
    assert out == SetEndpoint(("198.18.7.7", 8443))


def test_while_the_server_is_connected_its_netmap_decides_every_endpoint(moved, alice):
    """The connected server hears a node's new endpoints as soon as it reconnects; a peer it gives
    no endpoint, or whose endpoint does not take a connection (behind a NAT), is reached through a
    hub (NAT traversal), not at an address from its record."""
    for held in (Held(("198.18.0.5", 8443), from_dht=False), Held(None, from_dht=False)):
        for failing in (True, False):
            out = _decide(moved, netmap=_netmap(_listed(alice)), server_connected=True, held=held,
                          endpoint_failing=failing)
            assert out == Ignore("netmap_wins")


def test_the_same_endpoint_changes_nothing(moved, alice):
    held = Held(("198.18.7.7", 8443), from_dht=False)
    out = _decide(moved, netmap=_netmap(_listed(alice)), held=held, endpoint_failing=True)
    assert out == Ignore("unchanged")


def test_a_netmap_peer_we_no_longer_hold_is_not_brought_back(moved, alice):
    """e.g. dropped by a revocation from the DHT while the map still lists it."""
    assert _decide(moved, netmap=_netmap(_listed(alice)), held=None) == Ignore("not_a_peer")


# ----------------------------------------------------------------------------- nodes the netmap lacks


def test_with_the_server_away_a_node_the_netmap_lacks_becomes_a_peer(moved, bob):
    assert _decide(moved, netmap=_netmap(_listed(bob))) == AddPeer(("198.18.7.7", 8443))
    assert _decide(moved, netmap=None, server_connected=False) == AddPeer(("198.18.7.7", 8443))


def test_while_the_server_is_connected_its_netmap_is_the_membership(moved, bob):
    assert _decide(moved, netmap=_netmap(_listed(bob)), server_connected=True) == Ignore("server_connected")


def test_before_any_netmap_the_server_link_does_not_decide(moved):
    """No map at all (a fresh agent, its server not reached yet): the record is all there is."""
    assert _decide(moved, netmap=None, server_connected=True) == AddPeer(("198.18.7.7", 8443))


def test_an_overlay_address_held_by_another_peer_stays_with_it(moved, bob):
    out = _decide(moved, netmap=_netmap(_listed(bob)), address_holder=bob.peer_id)
    assert out == Ignore("address_taken")
    assert _decide(moved, netmap=_netmap(), address_holder=moved.peer_id) == AddPeer(("198.18.7.7", 8443))


def test_a_dht_peer_follows_its_newer_record(moved):
    assert _decide(moved, held=Held(("198.18.0.5", 8443), from_dht=True)) == SetEndpoint(("198.18.7.7", 8443))
    assert _decide(moved, held=Held(("198.18.7.7", 8443), from_dht=True)) == Ignore("unchanged")


def test_our_own_record_and_a_node_the_netmap_revokes_are_ignored(moved, alice):
    assert _decide(moved, own_peer_id=alice.peer_id) == Ignore("own")
    revoked = _netmap(revoked=[nm.Revocation(alice.peer_id, "ab" * 32)])
    assert _decide(moved, netmap=revoked) == Ignore("revoked")


def _rules(*rules: tuple[str, str, str, list]) -> RuleIndex:
    """A node's compiled rules, as the server sends them: our address on one side of each."""
    return RuleIndex.build([check_rule([src], [dst], proto, ports) for src, dst, proto, ports in rules])


# alice (moved) is 10.10.10.5; we are 10.10.10.2
NOT_ALICE = _rules(("10.10.10.6", "10.10.10.2", "any", []), ("10.10.10.2", "10.10.10.7", "tcp", [(22, 22)]))
ALICE_TO_US = _rules(("10.10.10.5", "10.10.10.2", "tcp", [(22, 22)]))
US_TO_ALICE = _rules(("10.10.10.2", "10.10.10.5", "icmp", []))
ALICE_ELSEWHERE = _rules(("10.10.10.5", "10.10.10.7", "any", []), ("10.10.10.7", "10.10.10.5", "any", []))
SUBNET_TO_US = _rules(("10.10.10.0/28", "10.10.10.2", "udp", [(53, 53)]))


def test_dht_data_never_grants_what_the_policy_denies(moved, alice, bob):
    """A node the netmap does not list, whose overlay address our rules never let talk to ours
    (either way), is not made a peer, a DHT peer already held does not follow its record, and a
    node the rules name is, whatever the server's persisted map lists."""
    cases = [
        {"netmap": _netmap(_listed(bob))},  # the persisted map, without alice
        {"netmap": None},
        {"netmap": _netmap(), "held": Held(("198.18.0.5", 8443), from_dht=True)},
    ]
    for kw in cases:
        for rules in (NOT_ALICE, ALICE_ELSEWHERE, _rules()):
            assert _decide(moved, rules=rules, **kw) == Ignore("policy"), (kw, rules)
        for rules in (None, ALICE_TO_US, US_TO_ALICE, SUBNET_TO_US):
            assert _decide(moved, rules=rules, **kw) != Ignore("policy"), (kw, rules)
    assert _decide(moved, netmap=_netmap(_listed(bob)), rules=ALICE_TO_US) == AddPeer(("198.18.7.7", 8443))
    assert _decide(moved, netmap=_netmap(_listed(bob)), rules=US_TO_ALICE) == AddPeer(("198.18.7.7", 8443))


def test_the_policy_is_asked_with_our_own_overlay_address(moved):
    """The rules name the pair: the same rules refuse alice to a node at another address."""
    assert _decide(moved, rules=ALICE_TO_US) == AddPeer(("198.18.7.7", 8443))
    assert _decide(moved, rules=ALICE_TO_US, own_ip=ipaddress.ip_address("10.10.10.3")) == Ignore("policy")
    assert _decide(moved, rules=ALICE_TO_US, own_ip=ipaddress.ip_address("fd00::2")) == Ignore("policy")


def test_a_netmap_peer_is_not_asked_about_the_policy(moved, alice):
    """The server listed it (the policy lets the pair talk, or it is a relay, which the rules need
    not name): a record only moves its endpoint, and the data path still judges every packet."""
    held = Held(("198.18.0.5", 8443), from_dht=False)
    out = _decide(moved, netmap=_netmap(_listed(alice)), rules=NOT_ALICE, held=held, endpoint_failing=True)
    assert out == SetEndpoint(("198.18.7.7", 8443))


def test_without_rules_every_enrolled_node_may_peer(alice, bob):
    """The policy "allow" (or none): the data path filters nothing, so nothing is refused here."""
    assert peering.policy_allows(None, MY_IP, ipaddress.ip_address("10.10.10.5"))
    assert peering.policy_allows(None, MY_IP, ipaddress.ip_address("fd00::5"))
    assert not peering.policy_allows(_rules(("0.0.0.0/0", "10.10.10.2", "any", [])), MY_IP,
                                     ipaddress.ip_address("fd00::5"))
    assert peering.policy_allows(_rules(("0.0.0.0/0", "10.10.10.2", "any", [])), MY_IP,
                                 ipaddress.ip_address("10.10.10.5"))


# ----------------------------------------------------------------------------- which endpoint


def test_the_advertised_endpoint_is_dialed_first_then_the_observed_one(alice, ca_public):
    rec = verify_node_record(make_record(alice, candidates=[
        endpoint("198.18.1.1", kind=KIND_LOCAL), endpoint("198.18.3.3", kind=KIND_REFLEXIVE),
        endpoint("198.18.2.2", kind=KIND_OBSERVED), endpoint("198.18.4.4", 7000)]), ca_public, NOW)
    assert dial_endpoint(rec) == ("198.18.4.4", 7000)
    no_reported = verify_node_record(make_record(alice, candidates=[
        endpoint("198.18.1.1", kind=KIND_LOCAL), endpoint("198.18.2.2", kind=KIND_OBSERVED)]), ca_public, NOW)
    assert dial_endpoint(no_reported) == ("198.18.2.2", 8443)
    others = verify_node_record(make_record(alice, candidates=[
        endpoint("198.18.3.3", kind=KIND_REFLEXIVE), endpoint("198.18.1.1", kind=KIND_LOCAL)]),
        ca_public, NOW)
    assert dial_endpoint(others) == ("198.18.3.3", 8443)


def test_a_loopback_endpoint_is_dialed_only_in_a_loopback_lab(alice, ca_public):
    rec = verify_node_record(make_record(alice, candidates=[endpoint("127.0.0.9")], allow_loopback=True),
                             ca_public, NOW, allow_loopback=True)
    assert dial_endpoint(rec) is None
    assert dial_endpoint(rec, allow_loopback=True) == ("127.0.0.9", 8443)
    assert _decide(rec) == AddPeer(None)  # a peer all the same: it may call us


# ----------------------------------------------------------------------------- the lookup throttle


def test_one_lookup_per_key_per_interval():
    t = LookupThrottle(per_key_s=30, rate=100, burst=100)
    assert t.allow("a", 0.0) and not t.allow("a", 29.9) and t.allow("a", 30.0)
    assert t.allow("b", 1.0)
    assert t.refused == 1


def test_the_global_bucket_bounds_what_many_keys_can_start():
    t = LookupThrottle(per_key_s=30, rate=1.0, burst=5)
    keys = (f"k{i}" for i in itertools.count())
    assert sum(t.allow(next(keys), 0.0) for _ in range(50)) == 5
    assert sum(t.allow(next(keys), 2.0) for _ in range(50)) == 2  # two tokens back after 2 s
    assert t.refused == 93


def test_the_throttle_forgets_the_oldest_keys_first():
    t = LookupThrottle(per_key_s=30, rate=1000, burst=1000, max_keys=3)
    for k in "abcd":
        assert t.allow(k, 0.0)
    assert t.allow("a", 1.0)  # forgotten: allowed again
    assert not t.allow("d", 1.0)
    t.forget("d")
    assert t.allow("d", 1.0)
