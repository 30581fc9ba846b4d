"""Endpoint candidates (paths/candidates.py), the NAT class (paths/natclass.py) and path quality
(paths/quality.py): validation, caps, expiry, ordering; each rule on a fake clock."""

from __future__ import annotations

import ipaddress

import pytest

from nodeagent.paths.candidates import (
    MAX_CANDIDATES,
    PEER_REFLEXIVE_IDLE_S,
    Candidate,
    CandidateError,
    CandidateSet,
    check_endpoint,
    direct_kind,
    local_candidates,
)
from nodeagent.paths.natclass import classify, should_punch
from nodeagent.paths.quality import LOSS_COST_MS, LOSS_WINDOW, PathQuality
from nodeagent.protocol.disco import CandidateKind, NatClass, WireCandidate

K = CandidateKind


@pytest.mark.parametrize(
    "ip",
    [
        "0.0.0.0",
        "::",
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "169.254.1.1",
        "fe80::1",
        "224.0.0.1",
        "239.255.255.250",
        "ff02::1",
        "255.255.255.255",
        "0.1.2.3",
        "::ffff:127.0.0.1",
        "not an ip",
        "198.18.0.1/24",
        "",
    ],
)
def test_addresses_that_can_not_be_a_candidate_are_refused(ip):
    with pytest.raises(CandidateError):
        check_endpoint(ip, 9443)


@pytest.mark.parametrize("port", [0, -1, 65536, "9443", 9443.0, None, True])
def test_ports_outside_1_to_65535_are_refused(port):
    with pytest.raises(CandidateError):
        check_endpoint("198.18.0.1", port)


@pytest.mark.parametrize(
    ("ip", "port", "expected"),
    [
        ("198.18.0.1", 1, ("198.18.0.1", 1)),
        ("198.19.255.254", 65535, ("198.19.255.254", 65535)),
        ("10.1.2.3", 9443, ("10.1.2.3", 9443)),  # private addresses are fine: peers behind one NAT
        ("2001:db8::1", 9443, ("2001:db8::1", 9443)),
        ("2001:DB8:0::1", 9443, ("2001:db8::1", 9443)),  # normalised
        ("::ffff:198.18.0.1", 9443, ("198.18.0.1", 9443)),  # a mapped IPv4 is the IPv4 address
    ],
)
def test_usable_candidates_are_normalised(ip, port, expected):
    assert check_endpoint(ip, port) == expected


def test_local_candidates_skip_the_tun_the_overlay_and_unusable_addresses():
    addrs = [
        ("198.18.10.2", 24, "eth0"),
        ("10.10.10.5", 24, "sm1234"),
        ("127.0.0.1", 8, "lo"),
        ("fe80::1", 64, "eth0"),
        ("10.20.0.1", 16, "br0"),
        ("198.18.10.2", 24, "eth1"),
        ("10.30.0.1", 24, "docker0"),
    ]
    got = local_candidates(
        addrs, 9443, skip_interfaces=["sm1234"], skip_networks=["10.10.10.0/24", "10.20.0.0/16"]
    )
    assert got == [Candidate(K.LOCAL, "198.18.10.2", 9443), Candidate(K.LOCAL, "10.30.0.1", 9443)]


def test_local_candidates_are_capped():
    addrs = [(f"198.18.{i}.1", 24, f"e{i}") for i in range(40)]
    assert len(local_candidates(addrs, 9443)) == MAX_CANDIDATES


@pytest.mark.parametrize(
    ("addr", "punched", "expected"),
    [
        (("198.18.10.3", 9443), True, "lan"),
        (("198.18.10.3", 9443), False, "lan"),
        (("198.19.5.9", 9443), True, "punched"),
        (("198.19.5.9", 9443), False, "public"),
    ],
)
def test_how_a_direct_path_was_made(addr, punched, expected):
    assert (
        direct_kind(addr, ["198.18.10.0/24", ipaddress.ip_network("2001:db8::/64")], punched=punched)
        == expected
    )


def test_a_set_holds_at_most_16_and_refuses_the_17th_of_the_same_rank():
    s = CandidateSet()
    for i in range(MAX_CANDIDATES):
        assert s.add(K.REFLEXIVE, f"198.18.0.{i + 1}", 9443, 0.0)
    assert not s.add(K.REFLEXIVE, "198.18.1.1", 9443, 0.0)
    assert len(s) == MAX_CANDIDATES and s.refused == 1
    assert ("198.18.1.1", 9443) not in s


def test_a_full_set_gives_a_lower_rank_or_the_oldest_peer_reflexive_slot_to_a_better_one():
    s = CandidateSet()
    for i in range(MAX_CANDIDATES - 1):
        s.add(K.REFLEXIVE, f"198.18.0.{i + 1}", 9443, 0.0)
    s.add(K.CONFIGURED, "198.18.9.9", 9443, 0.0)
    assert s.add(K.LOCAL, "198.18.5.5", 9443, 1.0)  # configured (last rank) gave way
    assert ("198.18.9.9", 9443) not in s
    s2 = CandidateSet()
    for i in range(MAX_CANDIDATES):
        s2.add(K.PEER_REFLEXIVE, f"198.18.0.{i + 1}", 9443, float(i))
    assert s2.add(K.PEER_REFLEXIVE, "198.18.1.1", 9443, 100.0)  # the oldest peer-reflexive went
    assert ("198.18.0.1", 9443) not in s2 and len(s2) == MAX_CANDIDATES


def test_a_set_never_holds_our_own_address_or_an_invalid_one():
    s = CandidateSet(own=[("198.18.0.1", 9443)])
    assert not s.add(K.OBSERVED, "198.18.0.1", 9443, 0.0)
    assert not s.add(K.OBSERVED, "127.0.0.1", 9443, 0.0)
    assert not s.merge([WireCandidate(K.LOCAL, "224.0.0.5", 9443)], 0.0)
    assert len(s) == 0 and s.refused == 3
    s.add(K.LOCAL, "198.18.0.2", 9443, 0.0)
    s.set_own([("198.18.0.2", 9443)])
    assert len(s) == 0


def test_readding_refreshes_and_keeps_the_better_kind():
    s = CandidateSet()
    assert s.add(K.OBSERVED, "198.18.0.1", 9443, 0.0)
    assert not s.add(K.REFLEXIVE, "198.18.0.1", 9443, 1.0)
    assert s.kind_of(("198.18.0.1", 9443)) is K.REFLEXIVE
    assert not s.add(K.CONFIGURED, "198.18.0.1", 9443, 2.0)
    assert s.kind_of(("198.18.0.1", 9443)) is K.REFLEXIVE


def test_peer_reflexive_candidates_expire_after_45_s_idle_and_others_do_not():
    s = CandidateSet()
    s.add(K.PEER_REFLEXIVE, "198.18.0.1", 4000, 0.0)
    s.add(K.REFLEXIVE, "198.18.0.2", 9443, 0.0)
    s.expire(PEER_REFLEXIVE_IDLE_S)
    assert len(s) == 2
    s.add(K.PEER_REFLEXIVE, "198.18.0.1", 4000, 30.0)  # seen again
    s.expire(30.0 + PEER_REFLEXIVE_IDLE_S)
    assert len(s) == 2
    s.expire(30.0 + PEER_REFLEXIVE_IDLE_S + 0.01)
    assert [c.addr for c in s.ordered()] == [("198.18.0.2", 9443)]


def test_probing_order_is_lan_first():
    s = CandidateSet()
    s.add(K.CONFIGURED, "198.18.0.4", 9443, 0.0)
    s.add(K.OBSERVED, "198.18.0.3", 9443, 0.0)
    s.add(K.REFLEXIVE, "198.18.0.2", 9443, 0.0)
    s.add(K.LOCAL, "198.18.0.1", 9443, 0.0)
    assert [c.kind for c in s.ordered()] == [K.LOCAL, K.REFLEXIVE, K.OBSERVED, K.CONFIGURED]


def test_the_netmaps_list_replaces_its_kinds_and_leaves_learned_ones():
    s = CandidateSet()
    s.add(K.PEER_REFLEXIVE, "198.18.0.9", 5000, 0.0)
    s.replace_kinds([K.LOCAL, K.OBSERVED], [Candidate(K.LOCAL, "198.18.0.1", 9443)], 0.0)
    assert not s.replace_kinds([K.LOCAL, K.OBSERVED], [Candidate(K.OBSERVED, "198.18.0.1", 9443)], 1.0)
    assert s.replace_kinds([K.LOCAL, K.OBSERVED], [Candidate(K.OBSERVED, "198.18.0.2", 9443)], 2.0)
    assert {c.addr for c in s.ordered()} == {("198.18.0.2", 9443), ("198.18.0.9", 5000)}


# --- NAT class --------------------------------------------------------------------------------

H1, H2 = "aa" * 20, "bb" * 20


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        ({}, NatClass.UNKNOWN),
        ({H1: ("198.18.10.2", 9443)}, NatClass.PUBLIC),  # a hub saw our own address and port
        ({H1: ("198.19.0.10", 9443)}, NatClass.EASY),  # one hub, our port kept
        ({H1: ("198.19.0.10", 31337)}, NatClass.UNKNOWN),  # one hub, another port: cannot tell
        ({H1: ("198.19.0.10", 9443), H2: ("198.19.0.10", 9443)}, NatClass.EASY),
        ({H1: ("198.19.0.10", 31337), H2: ("198.19.0.10", 31337)}, NatClass.EASY),  # port changed once, kept
        ({H1: ("198.19.0.10", 40001), H2: ("198.19.0.10", 52117)}, NatClass.HARD),
        ({H1: ("198.19.0.10", 9443), H2: ("198.19.0.11", 9443)}, NatClass.HARD),  # another address per hub
    ],
)
def test_nat_class_from_what_the_hubs_saw(observed, expected):
    assert classify(observed, local=["198.18.10.2"], port=9443) is expected


@pytest.mark.parametrize("ours", list(NatClass))
@pytest.mark.parametrize("theirs", list(NatClass))
def test_only_hard_with_hard_is_not_punched(ours, theirs):
    assert should_punch(ours, theirs) is not (ours is NatClass.HARD and theirs is NatClass.HARD)


# --- path quality -----------------------------------------------------------------------------


def test_rtt_is_smoothed_as_rfc_6298():
    q = PathQuality()
    assert q.score() is None and q.loss is None
    q.sent(1, 0.0)
    assert q.acked(1, 0.100) == pytest.approx(0.1)
    assert q.srtt == pytest.approx(0.1)
    q.sent(2, 1.0)
    q.acked(2, 1.020)
    assert q.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.02)
    assert q.rtt_ms() == pytest.approx(90.0)


def test_unknown_or_repeated_answers_are_ignored():
    q = PathQuality()
    q.sent(1, 0.0)
    assert q.acked(2, 0.1) is None
    assert q.acked(1, 0.1) is not None
    assert q.acked(1, 0.2) is None
    assert list(q.results) == [True]


def test_loss_is_counted_over_the_last_20_probes_and_costs_10_ms_per_percent():
    q = PathQuality()
    for i in range(LOSS_WINDOW):
        q.sent(i, float(i))
        if i % 4 == 0:
            q.acked(i, i + 0.01)
    assert q.expire(LOSS_WINDOW + 5.0, lost_after=1.0) == 15
    assert q.loss == pytest.approx(0.75)
    assert q.score() == pytest.approx(10.0 + LOSS_COST_MS * 0.75)
    for i in range(LOSS_WINDOW, 2 * LOSS_WINDOW):  # a window of answers washes the loss out
        q.sent(i, float(i))
        q.acked(i, i + 0.01)
    assert q.loss == 0.0


def test_a_probe_is_lost_only_after_lost_after():
    q = PathQuality()
    q.sent(1, 0.0)
    assert q.expire(1.0, lost_after=1.0) == 0
    assert q.expire(1.01, lost_after=1.0) == 1
    assert q.acked(1, 1.02) is None  # too late: it already counted as lost


def test_alive_means_an_answer_within_dead_after():
    q = PathQuality()
    assert not q.alive(0.0, 2.0)
    q.sent(1, 0.0)
    q.acked(1, 0.01)
    assert q.alive(2.01, 2.0) and not q.alive(2.02, 2.0)


def test_pending_probes_are_bounded():
    q = PathQuality()
    for i in range(1000):
        q.sent(i, float(i))
    assert len(q.pending) <= 64 and q.loss == 1.0
